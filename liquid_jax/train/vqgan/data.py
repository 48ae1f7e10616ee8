"""Image batches for VQGAN training (synthetic coloured shapes or a folder of images), and
host arrays put on the mesh with each process filling only its own devices."""

from __future__ import annotations

import os
from typing import Any, Sequence

import grain
import jax
import ml_collections
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
    """Batch ``step`` of an endless, reshuffled stream over uint8 images (grain MapDataset).

    Random access by step index makes resuming exact: batch ``step`` is the same after a
    restart. Images are decoded lazily when they come from files, and only the rows asked for.
    """

    def __init__(self, source: np.ndarray | Sequence[str], batch_size: int, size: int, seed: int = 0):
        if len(source) < batch_size:
            raise ValueError(f"{len(source)} training images is fewer than the batch size {batch_size}")
        ds = grain.MapDataset.source(source)
        if not isinstance(source, np.ndarray):
            ds = ds.map(lambda path: resize_center_crop(load_image(path), size))
        self.shape = (batch_size, size, size, 3)
        self._images = ds.repeat().shuffle(seed=seed)

    def rows(self, step: int, rows: slice) -> np.ndarray:
        """uint8 [len(rows), size, size, 3]: rows ``rows`` of batch ``step``."""
        first = step * self.shape[0]
        return np.stack([self._images[first + i] for i in range(self.shape[0])[rows]])

    def on_mesh(self, step: int, sharding: jax.sharding.Sharding) -> jax.Array:
        """Batch ``step`` as one global array split by rows over ``sharding``; each process
        reads only the rows of its own devices."""
        return jax.make_array_from_callback(self.shape, sharding, lambda index: self.rows(step, index[0]))


def on_mesh(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """Arrays that are the same on every process as global arrays placed with ``sharding``.

    Each process fills only its own devices, without the cross-process comparison of
    ``jax.device_put`` (one collective per array).
    """

    def one(x: Any) -> jax.Array:
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def datasets(config: ml_collections.ConfigDict) -> tuple[ImageBatches, np.ndarray]:
    """(training batches, held-out uint8 images) of a VQGAN run config's ``data`` section."""
    d = config.data
    if d.source == "shapes":
        train = shape_images(d.num_train, d.image_size, seed=d.seed)
        held_out = shape_images(d.num_eval, d.image_size, seed=d.seed + 1_000_003)
    elif d.source == "folder":
        paths = folder_images(d.folder)
        if len(paths) <= d.num_eval:
            raise ValueError(f"{d.folder}: {len(paths)} images, need more than num_eval={d.num_eval}")
        train, held_out = paths[d.num_eval:], load_folder(paths[: d.num_eval], d.image_size)
    else:
        raise ValueError(f"data.source {d.source!r}: expected 'shapes' or 'folder'")
    return ImageBatches(train, config.batch_size, d.image_size, seed=d.seed), held_out
