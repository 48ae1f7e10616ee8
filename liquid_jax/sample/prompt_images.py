"""Images in a prompt, given to the model to read: files, PIL images or pixels -> VQGAN codes.

Upstream's understanding preprocessing: pad to a square with the fill colour
(122, 116, 104), resize to the VQGAN's training resolution (512 for Chameleon's), encode.
Given a (height, width) size instead, an image is resized to cover it and center-cropped,
as pre-tokenization does for an aspect bucket. Arrays of integer codes (already tokenized
images) pass through unchanged: flat ones are square grids, 2-D ones keep their grid.
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
    images: Sequence[Any], codec: Any = None, image_size: int | tuple[int, int] | None = None
) -> list[np.ndarray]:
    """One int32 code grid [h, w] per image.

    Each image is a path, encoded bytes, a PIL image, a uint8 [H, W, 3] array, or an
    integer array of codes. Anything but codes needs ``codec`` (an ImageCodec); pixels
    are brought to ``image_size``: a side (padded to a square first; default: the codec's
    resolution) or a (height, width).
    """
    out: list[np.ndarray | None] = [None] * len(images)
    pixels, where = [], []
    for i, image in enumerate(images):
        if _is_codes(image):
            codes = np.asarray(image, np.int32)
            out[i] = codes if codes.ndim == 2 else codes.reshape(square_grid(codes.size))
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
        if isinstance(image_size, tuple):
            pixels.append(resize_center_crop(img, *image_size))
        else:
            pixels.append(resize_center_crop(pad_to_square(img), image_size or codec.config.resolution))
        where.append(i)
    if pixels:
        batch = np.stack(pixels)
        grid = codec.grid_for(*batch.shape[1:3])
        for i, codes in zip(where, codec.encode(batch)):
            out[i] = np.asarray(codes, np.int32).reshape(grid)
    return out
