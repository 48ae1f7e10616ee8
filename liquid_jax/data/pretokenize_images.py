"""Images + captions -> ArrayRecord shards of VQGAN codes (``records.ImageRecord``).

Per unit of input (``captioned_images``) one shard ``{prefix}-{i:05d}-of-{n:05d}.array_record``:
images are decoded and resized on a thread pool (``tokenizer.image``: alpha onto
white, LANCZOS resize to cover, center crop) to their aspect-ratio bucket (``buckets``;
by default one square of ``resolution``, upstream's path), images whose long/short side
ratio exceeds ``max_aspect_ratio`` are dropped as upstream does, and the rest is encoded
in batches of one bucket by the jitted codec; each record carries its grid, and the
report counts the images of each bucket. Unreadable images, missing or empty captions and dropped images
are listed by key in ``<shard>.report.json``; ``report.json`` merges all shard
reports of the output directory. Finished shards are skipped on a re-run.

The folder's ``dataset.json`` (``manifest``) records the VQGAN (codebook fingerprint,
size, downsampling), the grid, the settings and the inputs; a run with other ones is
refused before any work (or, with ``overwrite``, replaces every shard).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Any

import numpy as np
from tqdm import tqdm

from liquid_jax import paths
from liquid_jax.errors import UserError

from liquid_jax.data import manifest, records, shards
from liquid_jax.data.buckets import Bucket, closest
from liquid_jax.data.captioned_images import ImageItem, Unit, inputs_fingerprint
from liquid_jax.tokenizer.image import MAX_ASPECT_RATIO, ImageError, aspect_ratio, load_image, resize_center_crop

REPORT_FILE = "report.json"
REPORT_LISTS = ("broken", "aspect_filtered", "empty_caption")


def _prepare(item: ImageItem, buckets: list[Bucket], max_aspect: float) -> tuple[str, Any]:
    """("ok", (bucket, pixels)) or (report list, reason)."""
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
    bucket = buckets[0] if len(buckets) == 1 else closest(buckets, *img.size)
    return "ok", (bucket, resize_center_crop(img, bucket.height, bucket.width))


class _Encoder:
    """Collects prepared images per bucket and writes them as records, one codec batch
    (of one bucket) at a time."""

    def __init__(self, codec, writer: shards.ShardWriter, batch_size: int):
        self.codec = codec
        self.writer = writer
        self.batch_size = batch_size
        self.pending: dict[Bucket, list[tuple[ImageItem, np.ndarray]]] = {}
        self.counts: dict[str, int] = {}

    def add(self, item: ImageItem, bucket: Bucket, pixels: np.ndarray) -> None:
        self.pending.setdefault(bucket, []).append((item, pixels))
        if len(self.pending[bucket]) >= self.batch_size:
            self.flush(bucket)

    def flush(self, bucket: Bucket) -> None:
        pending = self.pending.pop(bucket, [])
        if not pending:
            return
        codes = self.codec.encode(np.stack([p for _, p in pending]))
        h, w = self.codec.grid_for(bucket.height, bucket.width)
        for (item, _), c in zip(pending, codes):
            self.writer.write(
                records.encode_image_record(
                    records.ImageRecord(caption=item.caption, codes=c, h=h, w=w, key=item.key)
                )
            )
        self.counts[bucket.name] = self.counts.get(bucket.name, 0) + len(pending)

    def flush_all(self) -> None:
        for bucket in list(self.pending):
            self.flush(bucket)


def _write_unit(unit: Unit, out: str, codec, pool, progress, *, buckets, batch_size, max_aspect) -> dict:
    report: dict[str, Any] = {"unit": unit.description, **{k: [] for k in REPORT_LISTS}}
    with shards.ShardWriter(out) as writer:
        encoder = _Encoder(codec, writer, batch_size)
        items = unit.items()
        # Bounded look-ahead keeps memory flat on huge units while threads decode.
        window: list[tuple[ImageItem, concurrent.futures.Future]] = []
        for item in items:
            window.append((item, pool.submit(_prepare, item, buckets, max_aspect)))
            if len(window) >= 4 * batch_size:
                _drain(window.pop(0), encoder, report, progress)
        for entry in window:
            _drain(entry, encoder, report, progress)
        encoder.flush_all()
    report["written"] = writer.count
    report["buckets"] = encoder.counts
    return report


def _drain(entry, encoder: _Encoder, report: dict, progress) -> None:
    item, future = entry
    status, value = future.result()
    if status == "ok":
        encoder.add(item, *value)
    else:
        report[status].append({"key": item.key, "reason": value})
    progress.update(1)


def merge_reports(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Sums the per-shard reports in ``output_dir`` into ``report.json`` and returns it."""
    folder = paths.resolve(output_dir)
    merged: dict[str, Any] = {"shards": 0, "written": 0, "buckets": {}, **{k: [] for k in REPORT_LISTS}}
    for path in sorted(folder.glob(f"*{records.SHARD_SUFFIX}.report.json")):
        report = json.loads(path.read_text())
        merged["shards"] += 1
        merged["written"] += report["written"]
        for name, n in report.get("buckets", {}).items():
            merged["buckets"][name] = merged["buckets"].get(name, 0) + n
        for k in REPORT_LISTS:
            merged[k] += report[k]
    shards.write_json_atomic(folder / REPORT_FILE, merged)
    return merged


def image_manifest(units: list[Unit], codec, *, prefix: str, buckets: list[Bucket],
                   max_aspect_ratio: float) -> manifest.Manifest:
    """The manifest of the shards these settings make from ``units`` with ``codec``."""
    return manifest.Manifest(
        kind="image",
        settings={"prefix": prefix, "buckets": [b.name for b in buckets], "max_aspect_ratio": max_aspect_ratio,
                  "units": len(units)},
        inputs=inputs_fingerprint(units),
        vqgan=manifest.VQGANInfo(codec.fingerprint, codec.num_image_codes, codec.pixels_per_code),
        grids=tuple(codec.grid_for(b.height, b.width) for b in buckets),
    )


def pretokenize_images(
    units: list[Unit],
    output_dir: str,
    codec,
    *,
    prefix: str = "images",
    resolution: int = 512,
    buckets: list[Bucket] | None = None,
    batch_size: int = 32,
    max_aspect_ratio: float = MAX_ASPECT_RATIO,
    decode_threads: int = 8,
    worker: tuple[int, int] = (0, 1),
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes this worker's shards (round-robin over units) and returns the merged report.
    ``buckets`` (``liquid_jax.data.buckets``) replaces the one square of ``resolution``."""
    if not units:
        raise UserError("the input holds no images; check --input and --captions")
    buckets = list(buckets) if buckets else [Bucket(resolution, resolution)]
    for bucket in buckets:
        codec.grid_for(bucket.height, bucket.width)  # whole codes, or a clear error now
    index, count = worker
    mine = [(i, u) for i, u in enumerate(units) if i % count == index]
    names = {i: records.shard_name(prefix, i, len(units)) for i, _ in mine}
    manifest.prepare(
        output_dir,
        image_manifest(units, codec, prefix=prefix, buckets=buckets, max_aspect_ratio=max_aspect_ratio),
        list(names.values()), overwrite=overwrite, single_worker=count == 1,
    )
    folder = paths.resolve(output_dir)
    todo = [(i, u) for i, u in mine if not shards.exists(folder / names[i])]
    progress = tqdm(desc=f"images (worker {index}/{count}, {len(todo)}/{len(mine)} shards to do)", unit="img")
    with concurrent.futures.ThreadPoolExecutor(decode_threads) as pool:
        for i, unit in todo:
            out = os.fspath(folder / names[i])
            report = _write_unit(
                unit, out, codec, pool, progress,
                buckets=buckets, batch_size=batch_size, max_aspect=max_aspect_ratio,
            )
            shards.write_json_atomic(out + ".report.json", report)
    progress.close()
    merged = merge_reports(folder)
    merged["shards_already_done"] = len(mine) - len(todo)
    return merged
