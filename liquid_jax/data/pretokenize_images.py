"""Images + captions -> ArrayRecord shards of VQGAN codes (``records.ImageRecord``).

Per unit of input (``image_inputs``) one shard ``{prefix}-{i:05d}-of-{n:05d}.array_record``:
images are decoded and resized on a thread pool (``tokenizer.image``: alpha onto
white, LANCZOS short side, center crop), images whose long/short side ratio exceeds
``max_aspect_ratio`` are dropped as upstream does, and the rest is encoded in batches
by the jitted codec. Unreadable images, missing or empty captions and dropped images
are listed by key in ``<shard>.report.json``; ``report.json`` merges all shard
reports of the output directory. Finished shards are skipped on a re-run.
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from liquid_jax.data import records, shards
from liquid_jax.data.image_inputs import ImageItem, Unit
from liquid_jax.tokenizer.image import MAX_ASPECT_RATIO, ImageError, aspect_ratio, load_image, resize_center_crop

REPORT_FILE = "report.json"
REPORT_LISTS = ("broken", "aspect_filtered", "empty_caption")


def _prepare(item: ImageItem, resolution: int, max_aspect: float) -> tuple[str, Any]:
    """("ok", pixels) or (report list, reason)."""
    if item.problem:
        return "broken", item.problem
    if item.caption is None or not item.caption.strip():
        return "empty_caption", "missing or empty caption"
    try:
        img = load_image(item.data, name=item.key)
    except ImageError as e:
        return "broken", e.reason
    ratio = aspect_ratio(img)
    if ratio > max_aspect:
        return "aspect_filtered", f"aspect ratio {ratio:.2f} of size {img.size}"
    return "ok", resize_center_crop(img, resolution)


class _Encoder:
    """Collects prepared images and writes them as records, one codec batch at a time."""

    def __init__(self, codec, writer: shards.ShardWriter, resolution: int, batch_size: int):
        self.codec = codec
        self.writer = writer
        self.grid = codec.grid_for(resolution, resolution)
        self.batch_size = batch_size
        self.pending: list[tuple[ImageItem, np.ndarray]] = []

    def add(self, item: ImageItem, pixels: np.ndarray) -> None:
        self.pending.append((item, pixels))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        codes = self.codec.encode(np.stack([p for _, p in self.pending]))
        h, w = self.grid
        for (item, _), c in zip(self.pending, codes):
            self.writer.write(
                records.encode_image_record(
                    records.ImageRecord(caption=item.caption, codes=c, h=h, w=w, key=item.key)
                )
            )
        self.pending = []


def _write_unit(unit: Unit, out: str, codec, pool, progress, *, resolution, batch_size, max_aspect) -> dict:
    report: dict[str, Any] = {"unit": unit.description, **{k: [] for k in REPORT_LISTS}}
    with shards.ShardWriter(out) as writer:
        encoder = _Encoder(codec, writer, resolution, batch_size)
        items = unit.items()
        # Bounded look-ahead keeps memory flat on huge units while threads decode.
        window: list[tuple[ImageItem, concurrent.futures.Future]] = []
        for item in items:
            window.append((item, pool.submit(_prepare, item, resolution, max_aspect)))
            if len(window) >= 4 * batch_size:
                _drain(window.pop(0), encoder, report, progress)
        for entry in window:
            _drain(entry, encoder, report, progress)
        encoder.flush()
    report["written"] = writer.count
    return report


def _drain(entry, encoder: _Encoder, report: dict, progress) -> None:
    item, future = entry
    status, value = future.result()
    if status == "ok":
        encoder.add(item, value)
    else:
        report[status].append({"key": item.key, "reason": value})
    progress.update(1)


def merge_reports(output_dir: str) -> dict[str, Any]:
    """Sums the per-shard reports in ``output_dir`` into ``report.json`` and returns it."""
    merged: dict[str, Any] = {"shards": 0, "written": 0, **{k: [] for k in REPORT_LISTS}}
    for path in sorted(glob.glob(os.path.join(output_dir, f"*{records.SHARD_SUFFIX}.report.json"))):
        with open(path) as f:
            report = json.load(f)
        merged["shards"] += 1
        merged["written"] += report["written"]
        for k in REPORT_LISTS:
            merged[k] += report[k]
    shards.write_json_atomic(os.path.join(output_dir, REPORT_FILE), merged)
    return merged


def pretokenize_images(
    units: list[Unit],
    output_dir: str,
    codec,
    *,
    prefix: str = "images",
    resolution: int = 512,
    batch_size: int = 32,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    decode_threads: int = 8,
    worker: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Writes this worker's shards (round-robin over units) and returns the merged report."""
    index, count = worker
    mine = [(i, u) for i, u in enumerate(units) if i % count == index]
    todo = [(i, u) for i, u in mine if not shards.exists(os.path.join(output_dir, records.shard_name(prefix, i, len(units))))]
    progress = tqdm(desc=f"images (worker {index}/{count}, {len(todo)}/{len(mine)} shards to do)", unit="img")
    with concurrent.futures.ThreadPoolExecutor(decode_threads) as pool:
        for i, unit in todo:
            out = os.path.join(output_dir, records.shard_name(prefix, i, len(units)))
            report = _write_unit(
                unit, out, codec, pool, progress,
                resolution=resolution, batch_size=batch_size, max_aspect=max_aspect_ratio,
            )
            shards.write_json_atomic(out + ".report.json", report)
    progress.close()
    merged = merge_reports(output_dir)
    merged["shards_already_done"] = len(mine) - len(todo)
    return merged
