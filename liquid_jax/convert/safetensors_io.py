"""Streaming access to Hugging Face safetensors checkpoints (one or many shards).

Reading opens each shard lazily with ``safetensors.safe_open`` and returns one tensor
at a time; errors name the shard file and the tensor. Writing accumulates tensors
up to ``max_shard_bytes`` per shard and writes ``model.safetensors.index.json`` when
there is more than one shard, as ``transformers.save_pretrained`` does.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterable

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = "model-{index:05d}-of-{total:05d}.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


class CheckpointReadError(ValueError):
    """A safetensors shard could not be read; the message names the file and tensor."""


class SafetensorsReader:
    """Tensors of a Hugging Face model directory, by name, one at a time.

    Each read opens its shard and closes it again: a shard kept open would keep every
    page read so far mapped into the process, doubling its resident memory.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = os.fspath(directory)
        self._weight_map = self._read_weight_map()

    def _read_weight_map(self) -> dict[str, str]:
        index_path = os.path.join(self.directory, INDEX_FILE)
        if os.path.exists(index_path):
            try:
                with open(index_path) as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointReadError(f"{index_path}: not a safetensors index ({e!r})") from e
            missing = sorted({f for f in weight_map.values()
                              if not os.path.isfile(os.path.join(self.directory, f))})
            if missing:
                raise CheckpointReadError(f"{index_path} names shard files that do not exist: {missing}")
            return dict(weight_map)
        files = sorted(n for n in os.listdir(self.directory) if n.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"{self.directory} has no *.safetensors files")
        weight_map = {}
        for name in files:
            with self._open(name) as handle:
                weight_map.update(dict.fromkeys(handle.keys(), name))
        return weight_map

    @contextlib.contextmanager
    def _open(self, file_name: str, tensor: str | None = None):
        path = os.path.join(self.directory, file_name)
        try:
            handle = safe_open(path, framework="np")
        except (SafetensorError, OSError) as e:
            what = f" while reading tensor {tensor!r}" if tensor else ""
            raise CheckpointReadError(f"{path}: corrupt or truncated safetensors file{what}: {e}") from e
        with handle:
            yield handle

    def names(self) -> list[str]:
        return list(self._weight_map)

    def file_of(self, name: str) -> str:
        try:
            return self._weight_map[name]
        except KeyError:
            raise KeyError(f"{self.directory} has no tensor {name!r}") from None

    def get_tensor(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a host numpy array (bfloat16 via ml_dtypes)."""
        file_name = self.file_of(name)
        with self._open(file_name, name) as handle:
            try:
                return handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError) as e:
                path = os.path.join(self.directory, file_name)
                raise CheckpointReadError(f"{path}: cannot read tensor {name!r}: {e}") from e


def _plan_shards(sizes: list[int], max_shard_bytes: int) -> list[int]:
    """Shard number of each tensor, filling shards in order up to ``max_shard_bytes``."""
    shard, used, out = 0, 0, []
    for size in sizes:
        if used and used + size > max_shard_bytes:
            shard, used = shard + 1, 0
        out.append(shard)
        used += size
    return out


def write_sharded(
    directory: str | os.PathLike,
    tensors: Iterable[tuple[str, np.ndarray]],
    sizes: list[int],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[str]:
    """Writes ``(name, array)`` pairs as safetensors shards; returns the files written.

    ``sizes`` (bytes per tensor, in iteration order) fixes the shard layout up front, so
    shard files get their final ``-of-N`` names while only one shard is held in memory.
    """
    directory = os.fspath(directory)
    plan = _plan_shards(sizes, max_shard_bytes)
    total = (plan[-1] + 1) if plan else 1
    names = [SINGLE_FILE] if total == 1 else [
        SHARD_PATTERN.format(index=i + 1, total=total) for i in range(total)
    ]
    weight_map: dict[str, str] = {}
    pending: dict[str, np.ndarray] = {}
    current = 0

    def flush() -> None:
        save_file(pending, os.path.join(directory, names[current]), metadata={"format": "pt"})
        pending.clear()

    count = 0
    for (name, array), shard in zip(tensors, plan):
        if shard != current:
            flush()
            current = shard
        pending[name] = np.ascontiguousarray(array)
        weight_map[name] = names[shard]
        count += 1
    if count != len(plan):
        raise ValueError(f"write_sharded: {len(plan)} sizes given for {count} tensors")
    flush()
    if total > 1:
        index = {"metadata": {"total_size": int(sum(sizes))}, "weight_map": weight_map}
        with open(os.path.join(directory, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    return names

