"""Shard discovery, per-process assignment and fault-tolerant random access.

A source path is a directory (every ``*.array_record`` in it), a glob, or a
comma-separated list of files. Under multi-host training every process reads a
disjoint part: whole shards round-robin when there are at least as many shards as
processes, otherwise every ``process_count``-th record of the concatenation.
"""

from __future__ import annotations

import dataclasses
import logging

import grain
from etils import epath

from liquid_jax.data.records import SHARD_SUFFIX


def list_shards(path: str) -> list[str]:
    """Sorted shard files named by ``path``; raises FileNotFoundError if there are none."""
    files: list[str] = []
    for part in (p.strip() for p in path.split(",") if p.strip()):
        p = epath.Path(part)
        if any(c in part for c in "*?["):
            files += [str(f) for f in epath.Path(p.parent).glob(p.name)]
        elif p.is_dir():
            files += [str(f) for f in p.glob(f"*{SHARD_SUFFIX}")]
        elif p.exists():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"data source {part!r} does not exist")
    if not files:
        raise FileNotFoundError(f"data source {path!r} names no {SHARD_SUFFIX} shards")
    return sorted(files)


@dataclasses.dataclass(frozen=True)
class ProcessShare:
    """The shards one process reads, and which of their records."""

    files: list[str]
    record_offset: int = 0
    record_stride: int = 1


def process_share(files: list[str], process_index: int, process_count: int) -> ProcessShare:
    """Disjoint shares whose union over all processes is the whole source."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process index {process_index} not in [0, {process_count})")
    if len(files) >= process_count:
        return ProcessShare(files=files[process_index::process_count])
    return ProcessShare(files=files, record_offset=process_index, record_stride=process_count)


@dataclasses.dataclass(frozen=True)
class ReadFailure:
    """Stands in for a record that could not be read from its shard."""

    detail: str


class TolerantSource:
    """Random access over ArrayRecord shards that survives unreadable shards and records.

    Shards that cannot be opened (e.g. truncated files) are left out and listed in
    ``bad_shards``; a record whose read fails becomes a ``ReadFailure``.
    """

    def __init__(self, files: list[str]):
        good, self.bad_shards = [], []
        for f in files:
            try:
                grain.sources.ArrayRecordDataSource([f]).__len__()
                good.append(f)
            except Exception as e:  # array_record raises bare RuntimeErrors
                logging.warning("skipping unreadable shard %s: %s", f, e)
                self.bad_shards.append(f)
        self.files = good
        self._source = grain.sources.ArrayRecordDataSource(good) if good else None

    def __len__(self) -> int:
        return 0 if self._source is None else len(self._source)

    def __getitem__(self, index: int) -> bytes | ReadFailure:
        try:
            return self._source[index]
        except Exception as e:
            return ReadFailure(f"record {index} of {self.files}: {e}")

    def __repr__(self) -> str:
        return f"TolerantSource({len(self.files)} shards)"
