"""Writing ArrayRecord shards atomically, so a finished shard is always a complete one.

A shard is written under a temporary name in the same directory and renamed when it
is closed; a re-run of an interrupted job sees only finished shards (``exists``).
"""

from __future__ import annotations

import os
from typing import Iterable

from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath

# One record per chunk: random access reads exactly one record (Grain's recommendation).
WRITER_OPTIONS = "group_size:1"


class ShardWriter:
    """Context manager writing one ArrayRecord shard; renamed into place on success."""

    def __init__(self, path: str | os.PathLike):
        self.path = epath.Path(path)
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{os.getpid()}"
        self.count = 0
        self._writer: ArrayRecordWriter | None = None

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ArrayRecordWriter(str(self._tmp), WRITER_OPTIONS)
        return self

    def write(self, record: bytes) -> None:
        self._writer.write(record)
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        self._writer.close()
        if exc_type is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_shard(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Writes ``records`` to one shard; returns how many."""
    with ShardWriter(path) as w:
        for r in records:
            w.write(r)
    return w.count


def exists(path: str | os.PathLike) -> bool:
    """Whether a finished shard is at ``path`` (temporary files never are)."""
    return epath.Path(path).exists()


def worker_slot(num_workers: int = 0, worker_index: int = -1) -> tuple[int, int]:
    """(index, count) of this worker: explicit flags win, else the jax process index.

    ``num_workers=0`` means "one worker per jax process" (1 outside jax.distributed).
    """
    if num_workers <= 0:
        import jax

        return jax.process_index(), jax.process_count()
    if not 0 <= worker_index < num_workers:
        raise ValueError(f"--worker_index {worker_index} must be in [0, {num_workers}) for --num_workers {num_workers}")
    return worker_index, num_workers


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Writes JSON under a temporary name, then renames (readers never see half a file)."""
    import json

    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    tmp.replace(path)
