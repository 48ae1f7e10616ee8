"""From documents to fixed-length rows: shift, long-document policy, first-fit packing.

Shift convention: a document of ids ``x[0..n-1]`` becomes ``n - 1`` positions with
``tokens[i] = x[i]``, ``targets[i] = x[i + 1]`` and ``loss_mask[i] = labels[i + 1]``.
The shift happens per document before packing, so no target ever belongs to another
document. Rows are packed with Grain's first-fit packer; ``segment_ids`` number the
documents of a row from 1 (0 = padding) and ``positions`` restart at 0 in every
document, so attention restricted to equal segment ids never crosses documents.

Packing is Grain's first-fit packer over ``num_bins`` rows; restoring a checkpoint
replays at most one round of ``num_bins`` rows. Efficiency depends on the mixture
(two ~1050-token image examples never share a 2048 row, so their rows need enough
short text to fill up); see benchmarks/pipeline_throughput.py.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from liquid_jax.data.sequences import Example

LONG_DOCUMENT_POLICIES = ("split", "truncate", "drop")
# Columns of the packed "row" feature.
TOKENS, TARGETS, LOSS_MASK = 0, 1, 2


def shift(example: Example) -> np.ndarray:
    """int32 [n - 1, 3]: (token, next token, loss flag of the next token) per position."""
    return np.stack([example.ids[:-1], example.ids[1:], example.labels[1:]], axis=1)


def fit_to_row(rows: np.ndarray, seq_len: int, policy: str) -> tuple[list[np.ndarray], bool]:
    """Applies the long-document policy; returns the pieces and whether anything was cut.

    ``split`` cuts into consecutive ``seq_len`` pieces (every target trained exactly
    once; each piece restarts its positions at 0), ``truncate`` keeps the first
    ``seq_len`` positions, ``drop`` returns no pieces.
    """
    if policy not in LONG_DOCUMENT_POLICIES:
        raise ValueError(f"long-document policy {policy!r}; expected one of {LONG_DOCUMENT_POLICIES}")
    if len(rows) <= seq_len:
        return [rows], False
    if policy == "split":
        return [rows[i : i + seq_len] for i in range(0, len(rows), seq_len)], True
    if policy == "truncate":
        return [rows[:seq_len]], True
    return [], True


def pack(
    ds: grain.IterDataset, seq_len: int, num_bins: int, seed: int, pad_id: int
) -> grain.IterDataset:
    """Packs ``{"row": int32 [n, 3], "counters": int64 [K]}`` pieces into rows.

    Output elements are dicts of ``tokens``, ``targets``, ``loss_mask``,
    ``segment_ids``, ``positions`` (int32 [seq_len]) and ``counters`` (int64 [K], the
    sum over the pieces in the row). Padding has token and target ``pad_id``,
    segment id 0 and loss mask 0.
    """
    packed = grain.experimental.FirstFitPackIterDataset(
        ds,
        length_struct={"row": seq_len},
        num_packing_bins=num_bins,
        seed=seed,
        shuffle_bins=True,
        meta_features=("counters",),
    )
    return packed.map(_PadAndSplit(pad_id))


class _PadAndSplit:
    """Packed ``row`` -> named int32 arrays; per-row sum of the pieces' counters."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        row = element["row"]
        segment_ids = element["row_segment_ids"]
        padding = segment_ids == 0
        tokens = np.where(padding, self.pad_id, row[:, TOKENS]).astype(np.int32)
        targets = np.where(padding, self.pad_id, row[:, TARGETS]).astype(np.int32)
        return {
            "tokens": tokens,
            "targets": targets,
            "loss_mask": row[:, LOSS_MASK].astype(np.int32),
            "segment_ids": segment_ids,
            "positions": element["row_positions"],
            "counters": np.sum(np.stack(element["counters"]), axis=0),
        }


def packing_efficiency(segment_ids: np.ndarray) -> float:
    """Real positions / all positions."""
    segment_ids = np.asarray(segment_ids)
    return float(np.count_nonzero(segment_ids) / segment_ids.size)
