"""Images given to the model to read: files, PIL images or pixels -> VQGAN codes.

Upstream's understanding preprocessing: pad to a square with the fill colour
(122, 116, 104), resize to the VQGAN's training resolution (512 for Chameleon's), encode. Arrays of integer codes
(already tokenized images) pass through unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import PIL.Image

from liquid_jax.tokenizer.image import load_image, pad_to_square, resize_center_crop

def _is_codes(image: Any) -> bool:
    return isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.integer) and image.dtype != np.uint8


def square_grid(num_codes: int) -> tuple[int, int]:
    """The (h, w) grid of a square image with ``num_codes`` codes."""
    side = math.isqrt(num_codes)
    if side * side != num_codes:
        raise ValueError(f"{num_codes} image codes do not form a square grid")
    return side, side


def images_to_codes(
    images: Sequence[Any], codec: Any = None, image_size: int | None = None
) -> list[np.ndarray]:
    """One flat int32 code array per image.

    Each image is a path, encoded bytes, a PIL image, a uint8 [H, W, 3] array, or an
    integer array of codes. Anything but codes needs ``codec`` (an ImageCodec); pixels
    are brought to ``image_size`` (default: the codec's resolution).
    """
    out: list[np.ndarray | None] = [None] * len(images)
    pixels, where = [], []
    for i, image in enumerate(images):
        if _is_codes(image):
            out[i] = np.asarray(image, np.int32).reshape(-1)
            continue
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(
                    f"image {i}: expected uint8 [H, W, 3] pixels or integer codes, got {image.dtype} {image.shape}"
                )
            image = PIL.Image.fromarray(image)
        if codec is None:
            raise ValueError("images given as pixels or files need a VQGAN codec to be tokenized")
        img = load_image(image, name=f"image {i}" if not isinstance(image, str) else None)
        size = image_size or codec.config.resolution
        pixels.append(resize_center_crop(pad_to_square(img), size))
        where.append(i)
    if pixels:
        for i, codes in zip(where, codec.encode(np.stack(pixels))):
            out[i] = np.asarray(codes, np.int32)
    return out
