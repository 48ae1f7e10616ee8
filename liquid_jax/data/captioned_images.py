"""Where the image + caption pairs of pre-tokenization come from: a folder with a caption
table, WebDataset tar shards, or a TFDS data set. Each input is cut into ``Unit``s, one
output shard each; a unit lists its items lazily and in a fixed order, so every worker
agrees on the split and a re-run writes the same shards. (Images in a prompt:
``liquid_jax.sample.prompt_images``.)
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import os
import tarfile
from typing import Any, Callable, Iterator

FORMATS = ("folder", "webdataset", "tfds")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One image (a path, encoded bytes or a PIL image) and its caption.

    ``caption`` is None when the caption is missing; ``problem`` names a failure found
    while listing the item (the image is then not loaded).
    """

    key: str
    data: Any
    caption: str | None
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class Unit:
    """A slice of the input written to one shard; ``fingerprint`` identifies its content
    wherever the input lies (caption rows, file name and size, data set slice)."""

    description: str
    items: Callable[[], Iterator[ImageItem]]
    fingerprint: str


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_fingerprint(units: list[Unit]) -> str:
    """One fingerprint of every unit's content, in order."""
    return _digest([u.fingerprint for u in units])


def _caption_rows(path: str) -> list[dict[str, Any]]:
    if path.lower().endswith((".jsonl", ".json")):
        rows = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from e
        return rows
    if path.lower().endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    raise ValueError(f"{path}: caption table must be .jsonl or .csv")


def folder_units(
    folder: str, captions: str, image_field: str, caption_field: str, per_shard: int
) -> list[Unit]:
    """A folder of images plus a JSONL/CSV table naming each image (relative path) and caption."""
    rows = _caption_rows(captions)
    for i, row in enumerate(rows):
        if image_field not in row:
            raise ValueError(f"{captions}: row {i + 1} has no field {image_field!r} (fields: {sorted(row)})")

    def items(chunk):
        def gen():
            for row in chunk:
                rel = str(row[image_field])
                caption = row.get(caption_field)
                yield ImageItem(key=rel, data=os.path.join(folder, rel), caption=None if caption is None else str(caption))

        return gen

    return [
        Unit(f"{captions} rows {s + 1}-{min(s + per_shard, len(rows))}", items(rows[s : s + per_shard]),
             _digest([image_field, caption_field, rows[s : s + per_shard]]))
        for s in range(0, len(rows), per_shard)
    ]


def _tar_sample(path: str, key: str, files: dict[str, bytes], caption_field: str) -> ImageItem:
    image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
    caption, issue = None, None
    if "txt" in files:
        try:
            caption = files["txt"].decode("utf-8").strip()
        except UnicodeDecodeError:
            issue = "caption is not UTF-8"
    elif "json" in files:
        try:
            caption = json.loads(files["json"]).get(caption_field)
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            issue = "caption JSON is unreadable"
    if image is None:
        issue = f"no image file (have {sorted(files)})"
    return ImageItem(key=f"{os.path.basename(path)}/{key}", data=image, caption=caption, problem=issue)


def _tar_items(path: str, caption_field: str) -> Iterator[ImageItem]:
    """Streams samples: consecutive members sharing a key (path up to the file name's first dot)."""
    key, files, count = None, {}, 0
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, name = os.path.split(member.name)
                stem, _, ext = name.partition(".")
                member_key = os.path.join(directory, stem)
                if member_key != key and files:
                    yield _tar_sample(path, key, files, caption_field)
                    count += 1
                    files = {}
                key = member_key
                files[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        problem = f"{path}: tar read failed after {count} samples ({type(e).__name__}: {e})"
        yield ImageItem(key=os.path.basename(path), data=None, caption=None, problem=problem)
        return
    if files:
        yield _tar_sample(path, key, files, caption_field)


def webdataset_units(patterns: list[str], caption_field: str) -> list[Unit]:
    """One unit per tar shard."""
    tars = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not tars:
        raise FileNotFoundError(f"no .tar files match {patterns}")
    return [Unit(t, (lambda t=t: _tar_items(t, caption_field)),
                 _digest([caption_field, os.path.basename(t), os.path.getsize(t)])) for t in tars]


def _caption_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def tfds_units(
    name: str, data_dir: str | None, split: str, image_field: str, caption_field: str, per_shard: int
) -> list[Unit]:
    """A TFDS data set read with ``tfds.data_source`` (array_record; no TensorFlow needed)."""
    import tensorflow_datasets as tfds

    source = tfds.data_source(name, data_dir=data_dir, split=split)
    n = len(source)

    def items(start, stop):
        def gen():
            for i in range(start, stop):
                key = f"{name}/{split}/{i}"
                try:
                    example = source[i]
                    caption = _caption_text(example[caption_field])
                except UnicodeDecodeError:
                    yield ImageItem(key, None, None, problem="caption is not UTF-8")
                    continue
                except Exception as e:  # a record TFDS cannot decode (e.g. a broken image)
                    yield ImageItem(key, None, None, problem=f"unreadable example ({type(e).__name__}: {e})")
                    continue
                yield ImageItem(key, _as_pil(example[image_field]), caption)

        return gen

    return [Unit(f"{name}[{split}] {s}-{min(s + per_shard, n)}", items(s, min(s + per_shard, n)),
                 _digest([name, split, image_field, caption_field, s, min(s + per_shard, n)]))
            for s in range(0, n, per_shard)]


def _as_pil(value: Any):
    import numpy as np
    import PIL.Image

    if isinstance(value, np.ndarray):
        return PIL.Image.fromarray(value.squeeze(-1) if value.shape[-1] == 1 else value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value


def units_for(
    fmt: str,
    inputs: list[str],
    *,
    captions: str | None = None,
    image_field: str = "image",
    caption_field: str = "caption",
    per_shard: int = 10_000,
    tfds_data_dir: str | None = None,
    tfds_split: str = "train",
) -> list[Unit]:
    """The units of an input in one of ``FORMATS``."""
    if fmt == "folder":
        if len(inputs) != 1 or not captions:
            raise ValueError("folder input needs exactly one --input folder and --captions table")
        return folder_units(inputs[0], captions, image_field, caption_field, per_shard)
    if fmt == "webdataset":
        return webdataset_units(inputs, caption_field)
    if fmt == "tfds":
        if len(inputs) != 1:
            raise ValueError("tfds input needs exactly one --input data set name")
        return tfds_units(inputs[0], tfds_data_dir, tfds_split, image_field, caption_field, per_shard)
    raise ValueError(f"input format {fmt!r}; expected one of {FORMATS}")


def guess_format(inputs: list[str], captions: str | None) -> str:
    """folder if a caption table is given, webdataset for .tar inputs, else tfds."""
    if captions:
        return "folder"
    if inputs and all(i.endswith(".tar") or "*" in i for i in inputs):
        return "webdataset"
    return "tfds"

