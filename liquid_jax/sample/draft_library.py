"""The draft library of speculative decoding: codes of known images at one grid.

Pre-tokenized image shards (``liquid-jax pretokenize images``, the training data) make a
good library: speculative decoding copies drafts from the image whose codes agree longest
with what it has committed so far (``liquid_jax.sample.speculative``). Drafts never change
the images drawn, only how many codes each forward pass commits.
"""

from __future__ import annotations

import collections
import logging

import numpy as np
from tqdm.auto import tqdm

from liquid_jax.data import records
from liquid_jax.data.sources import DataError, ReadFailure, TolerantSource, list_shards


def read_draft_library(path: str, grid: tuple[int, int], num_image_codes: int,
                       max_images: int | None = None) -> np.ndarray:
    """Distinct code grids [M, h * w] (int32, code indices, most frequent first) of the image
    records at ``grid`` in the shards named by ``path`` (a directory, glob or comma list, as
    a training source). Records at other grids, unreadable or corrupt ones and unreadable
    shards are counted and logged; ``max_images`` stops reading after that many records at ``grid``. Raises
    DataError naming ``path`` when none is at ``grid``."""
    source = TolerantSource(list_shards(path))
    h, w = grid
    rows, skipped = [], collections.Counter()
    if source.bad_shards:
        skipped["unreadable_shard"] = len(source.bad_shards)
    for index in tqdm(range(len(source)), desc="draft library", unit="record", leave=False):
        if max_images is not None and len(rows) >= max_images:
            break
        raw = source[index]
        if isinstance(raw, ReadFailure):
            skipped["read_error"] += 1
            continue
        try:
            record = records.decode_image_record(raw, num_image_codes)
        except records.RecordError as e:
            skipped[e.reason] += 1
            continue
        if (record.h, record.w) != (h, w):
            skipped["other_grid"] += 1
            continue
        rows.append(record.codes.astype(np.int32))
    if skipped:
        logging.warning("draft library %s: skipped %s", path, dict(skipped))
    if not rows:
        raise DataError(f"draft library {path!r} holds no image record at the {h}x{w} grid "
                        f"(skipped: {dict(skipped)}); give the shards pre-tokenized at the grid you draw")
    unique, counts = np.unique(np.stack(rows), axis=0, return_counts=True)
    return unique[np.argsort(-counts, kind="stable")]
