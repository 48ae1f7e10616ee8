"""Image batches for VQGAN training (the shapes world's renders or a folder of images), and
host arrays put on the mesh with each process filling only its own devices."""

from __future__ import annotations

import os
from typing import Any, Sequence

import grain
import jax
import ml_collections
import numpy as np
import PIL.Image

from liquid_jax.shapes.world import render, sample_scenes
from liquid_jax.tokenizer.image import load_image, resize_center_crop

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def shape_images(count: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [count, size, size, 3]: renders of the shapes world's training scenes on its
    64x64 canvas (``liquid_jax.shapes``), resized to ``size``; deterministic in ``seed``."""
    scenes = sample_scenes(count, "train", seed)
    return np.stack([resize_center_crop(PIL.Image.fromarray(render(scene)), size) for scene in scenes])


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
