"""Image batches for VQGAN training: synthetic coloured shapes or a folder of images."""

from __future__ import annotations

import os
from typing import Sequence

import grain
import numpy as np
import PIL.Image
import PIL.ImageDraw

from liquid_jax.tokenizer.image import load_image, resize_center_crop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


# Named colours of the synthetic shapes (a small palette, like a "shapes world").
PALETTE = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}


def render_shape_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """uint8 [size, size, 3]: one to three circles / squares / triangles on a flat background.

    Colours come from ``PALETTE``; a shape never has the background's colour.
    """
    colours = list(PALETTE.values())
    background = int(rng.integers(len(colours)))
    img = PIL.Image.new("RGB", (size, size), colours[background])
    draw = PIL.ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        r = float(rng.uniform(0.12, 0.3)) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        colour = colours[(background + 1 + int(rng.integers(len(colours) - 1))) % len(colours)]
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif kind == 1:
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return np.asarray(img, dtype=np.uint8)


def shape_images(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [count, size, size, 3] synthetic shape images, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    return np.stack([render_shape_image(rng, size) for _ in range(count)])


def folder_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively), sorted."""
    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not paths:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def load_folder(paths: Sequence[str], size: int) -> np.ndarray:
    """Decodes, resizes and center-crops images; unreadable files raise ImageError."""
    return np.stack([resize_center_crop(load_image(p), size) for p in paths])


class ImageBatches:
    """Batch ``i`` of an endless, reshuffled stream over uint8 images (grain MapDataset).

    Random access by step index makes resuming exact: batch ``step`` is the same after a
    restart. Images are decoded lazily when they come from files.
    """

    def __init__(self, source: np.ndarray | Sequence[str], batch_size: int, size: int, seed: int = 0):
        if len(source) < batch_size:
            raise ValueError(f"{len(source)} training images is fewer than the batch size {batch_size}")
        ds = grain.MapDataset.source(source)
        if not isinstance(source, np.ndarray):
            ds = ds.map(lambda path: resize_center_crop(load_image(path), size))
        self._ds = ds.repeat().shuffle(seed=seed).batch(batch_size, drop_remainder=True)

    def __getitem__(self, step: int) -> np.ndarray:
        return np.asarray(self._ds[step])

