"""Image pre- and post-processing for the VQGAN tokenizer, as upstream Liquid/Chameleon.

Generation data: alpha blended onto white, short side resized to ``size`` with LANCZOS
(rounded sizes), center crop, ``x / 255 * 2 - 1``. Understanding prompts: first padded to a
square with the mean colour (122, 116, 104). Decoding: clamp to [-1, 1], ``(x + 1) / 2 * 255``,
truncate to uint8.

Conversions that upstream leaves to PIL are made explicit here: 16-bit images are scaled
to 8 bits (``v >> 8`` for ``I;16``, ``v / 257`` rounded for 16-bit RGB(A) arrays), palette
and grayscale images with or without transparency go through RGBA, CMYK uses PIL's
conversion.
"""

from __future__ import annotations

import io
import os
from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image

# Upstream's understanding-time padding colour (the ImageNet mean, x255).
PAD_FILL = (122, 116, 104)
# Data preparation drops images whose long/short side ratio exceeds this.
MAX_ASPECT_RATIO = 2.0

ImageSource = Union[str, os.PathLike, bytes, PIL.Image.Image]

# x / 255 * 2 - 1 computed in float64 then rounded once to float32, for every uint8 value,
# exactly as upstream's numpy-then-torch.float() path.
_UINT8_TO_MODEL = (np.arange(256, dtype=np.float64) / 255.0 * 2 - 1).astype(np.float32)


class ImageError(ValueError):
    """An image that cannot be used; the message names the file."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


def _sixteen_bit_to_8(img: PIL.Image.Image) -> PIL.Image.Image:
    """Scales 16/32-bit integer grayscale images to 8 bits (PIL would clip at 255)."""
    arr = np.asarray(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return PIL.Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), "L")
    # Mode "I" (int32) is what PIL gives for 16-bit PNGs; assume a 16-bit range unless
    # the values already fit in 8 bits.
    arr = arr.astype(np.int64)
    if arr.max(initial=0) > 255:
        arr = np.clip(arr, 0, 65535) >> 8
    return PIL.Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def whiten_transparency(img: PIL.Image.Image) -> PIL.Image.Image:
    """RGB image; transparent pixels are blended onto white (float64 blend, truncated)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        img = _sixteen_bit_to_8(img)
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        img = PIL.Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    rgba = np.asarray(img.convert("RGBA"))
    if not (rgba[:, :, 3] < 255).any():
        return img.convert("RGB")
    alpha = rgba[:, :, 3:4] / 255.0
    rgb = (1 - alpha) * 255 + alpha * rgba[:, :, :3]
    return PIL.Image.fromarray(rgb.astype(np.uint8), "RGB")


def load_image(source: ImageSource, name: str | None = None) -> PIL.Image.Image:
    """Opens a file path, encoded bytes or PIL image and returns it as RGB.

    Alpha is blended onto white; grayscale, palette, CMYK and 16-bit images are converted.
    Raises ImageError (naming ``name`` or the path) when the data is not a readable image.
    """
    if name is None:
        name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<image bytes>"
    try:
        if isinstance(source, PIL.Image.Image):
            img = source
        elif isinstance(source, (bytes, bytearray, memoryview)):
            img = PIL.Image.open(io.BytesIO(bytes(source)))
        else:
            img = PIL.Image.open(source)
        img.load()
        if img.width < 1 or img.height < 1:
            raise ImageError(name, f"empty image of size {img.size}")
        return whiten_transparency(img)
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(name, f"no such file ({e.strerror})") from e
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise ImageError(name, f"not a readable image ({type(e).__name__}: {e})") from e


def aspect_ratio(img: PIL.Image.Image) -> float:
    """Long side / short side."""
    w, h = img.size
    return max(w, h) / min(w, h)


def check_aspect_ratio(img: PIL.Image.Image, name: str, limit: float = MAX_ASPECT_RATIO) -> None:
    """Raises ImageError if the image is more elongated than ``limit`` (upstream drops it)."""
    ratio = aspect_ratio(img)
    if ratio > limit:
        raise ImageError(name, f"aspect ratio {ratio:.2f} of size {img.size} exceeds {limit}")


def resize_center_crop(img: PIL.Image.Image, size: int = 512, width: int | None = None) -> np.ndarray:
    """Upstream generation preprocessing: LANCZOS resize to cover ``size`` x ``size`` (the
    short side; or ``size`` high and ``width`` wide), center crop.

    Returns uint8 [size, width or size, 3]. ``img`` should come from ``load_image``.
    """
    img = whiten_transparency(img)
    height, width = size, size if width is None else width
    scale = max(width / img.size[0], height / img.size[1])
    new_size = (round(scale * img.size[0]), round(scale * img.size[1]))
    img = img.resize(new_size, PIL.Image.LANCZOS)
    x0 = (img.width - width) // 2
    y0 = (img.height - height) // 2
    img = img.crop((x0, y0, x0 + width, y0 + height))
    return np.asarray(img, dtype=np.uint8)


def pad_to_square(img: PIL.Image.Image, fill: Sequence[int] = PAD_FILL) -> PIL.Image.Image:
    """Upstream understanding preprocessing: centers the image on a square of ``fill``."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = PIL.Image.new(img.mode, (side, side), tuple(fill))
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


ArrayLike = Union[np.ndarray, jax.Array]


def _xp(x: ArrayLike):
    """jax.numpy for jax arrays (traced ones too), numpy for anything else."""
    return jnp if isinstance(x, jax.Array) else np


def to_model_input(pixels: ArrayLike) -> ArrayLike:
    """uint8 pixels -> float32 in [-1, 1] (``x / 255 * 2 - 1``, rounded as upstream's);
    numpy in, numpy out; jax in (inside jit too), jax out. The one place pixels are scaled."""
    xp = _xp(pixels)
    pixels = xp.asarray(pixels)
    if pixels.dtype != xp.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    return xp.asarray(_UINT8_TO_MODEL)[pixels.astype(xp.int32)]


def to_uint8(x: ArrayLike) -> ArrayLike:
    """Model output in [-1, 1] -> uint8: clamp, ``(x + 1) / 2 * 255`` in float32, truncate;
    numpy or jax as ``to_model_input``."""
    xp = _xp(x)
    x = xp.clip(xp.asarray(x, dtype=xp.float32), -1.0, 1.0)
    return (((x + xp.float32(1)) / xp.float32(2)) * xp.float32(255)).astype(xp.uint8)
