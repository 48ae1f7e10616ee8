"""Streaming access to Hugging Face safetensors checkpoints (one or many shards).

Reading opens each shard lazily with ``safetensors.safe_open`` and returns one tensor
at a time; errors name the shard file and the tensor. Writing streams: the tensors'
names, shapes and dtypes are known up front, so each shard's header is written first
and every tensor goes to disk as it arrives (no shard is buffered in memory). Shards
hold up to ``max_shard_bytes`` and ``model.safetensors.index.json`` is written when
there is more than one, as ``transformers.save_pretrained`` does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
from typing import BinaryIO, Iterable, Sequence

import ml_dtypes
import numpy as np
from safetensors import SafetensorError, safe_open

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = "model-{index:05d}-of-{total:05d}.safetensors"
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
_DTYPE_NAMES = {
    np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
}


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


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a tensor to be written."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _plan_shards(sizes: list[int], max_shard_bytes: int) -> list[int]:
    """Shard number of each tensor, filling shards in order up to ``max_shard_bytes``."""
    shard, used, out = 0, 0, []
    for size in sizes:
        if used and used + size > max_shard_bytes:
            shard, used = shard + 1, 0
        out.append(shard)
        used += size
    return out


def _write_header(f: BinaryIO, specs: Sequence[TensorSpec]) -> None:
    """The safetensors header of ``specs`` (data in this order), padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"tensor {spec.name!r}: dtype {dtype} cannot be stored in safetensors")
        header[spec.name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)))
    f.write(text)


def write_sharded(
    directory: str | os.PathLike,
    specs: Sequence[TensorSpec],
    tensors: Iterable[tuple[str, np.ndarray]],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[str]:
    """Writes ``(name, array)`` pairs as safetensors shards; returns the files written.

    ``specs`` describes the tensors in iteration order; it fixes the shard layout and
    headers up front, so every array is written as soon as it arrives and shard files
    get their final ``-of-N`` names. A tensor that differs from its spec raises.
    """
    directory = os.fspath(directory)
    if not specs:
        raise ValueError(f"write_sharded: no tensors to write to {directory}")
    plan = _plan_shards([spec.nbytes for spec in specs], max_shard_bytes)
    total = plan[-1] + 1
    names = [SINGLE_FILE] if total == 1 else [
        SHARD_PATTERN.format(index=i + 1, total=total) for i in range(total)
    ]
    count = 0
    with contextlib.ExitStack() as stack:
        for name, array in tensors:
            if count == len(specs):
                raise ValueError(f"write_sharded: more tensors than the {len(specs)} specs given")
            spec, shard = specs[count], plan[count]
            array = np.ascontiguousarray(array)
            if (name, array.shape, array.dtype) != (spec.name, tuple(spec.shape), np.dtype(spec.dtype)):
                raise ValueError(f"write_sharded: got tensor {name!r} {array.shape} {array.dtype}, "
                                 f"expected {spec.name!r} {tuple(spec.shape)} {np.dtype(spec.dtype)}")
            if count == 0 or shard != plan[count - 1]:
                stack.close()
                f = stack.enter_context(open(os.path.join(directory, names[shard]), "wb"))
                _write_header(f, [s for s, n in zip(specs, plan) if n == shard])
            f.write(array.reshape(-1).view(np.uint8))
            count += 1
            del array  # keep no tensor alive while the next one is produced
    if count != len(specs):
        raise ValueError(f"write_sharded: {len(specs)} specs given for {count} tensors")
    if total > 1:
        weight_map = {spec.name: names[shard] for spec, shard in zip(specs, plan)}
        index = {"metadata": {"total_size": sum(spec.nbytes for spec in specs)}, "weight_map": weight_map}
        with open(os.path.join(directory, INDEX_FILE), "w") as out:
            json.dump(index, out, indent=2, sort_keys=True)
    return names
