"""Shard discovery, what a source holds, per-process assignment and fault-tolerant
random access.

A source path is a directory (every ``*.array_record`` in it), a glob, or a
comma-separated list of files. Before training, ``inspect_source`` reads each source's
manifests (``manifest``) and first records: its kind, its VQGAN and grids, and whether
any record is usable at all. Under multi-host training every process reads a
disjoint part: whole shards round-robin when there are at least as many shards as
processes, otherwise every ``process_count``-th record of the concatenation.
"""

from __future__ import annotations

import collections
import dataclasses
import logging

import grain
import msgpack

from liquid_jax import paths
from liquid_jax.data import manifest, records
from liquid_jax.data.records import SHARD_SUFFIX
from liquid_jax.errors import UserError

PROBE_RECORDS = 64  # first records of a source decoded before training starts


class DataError(UserError):
    """A data source cannot feed the run; the message names the source and the reason."""


def list_shards(path: str) -> list[str]:
    """Sorted shard files named by ``path``; raises FileNotFoundError if there are none."""
    files: list[str] = []
    for part in (p.strip() for p in path.split(",") if p.strip()):
        p = paths.resolve(part)
        if any(c in part for c in "*?["):
            files += [str(f) for f in p.parent.glob(p.name)]
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


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a source holds, read before training: its kind, and for image shards the
    VQGAN (None when no manifest records it) and the grids of its records."""

    kind: str
    vqgan: manifest.VQGANInfo | None
    grids: tuple[tuple[int, int], ...]


def _record_kind(raw: bytes) -> str | None:
    try:
        fields = msgpack.unpackb(raw, raw=True)
    except Exception:  # msgpack raises several unrelated exception types
        return None
    if not isinstance(fields, dict):
        return None
    keys = {k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in fields}
    return "image" if "codes" in keys else "text" if "text" in keys else None


def _first_records(files: list[str], limit: int) -> list[bytes]:
    source = TolerantSource(files)
    out = []
    for i in range(min(limit, len(source))):
        raw = source[i]
        if not isinstance(raw, ReadFailure):
            out.append(raw)
    return out


def inspect_source(name: str, path: str, declared_kind: str | None, files: list[str],
                   num_image_codes: int) -> SourceInfo:
    """The ``SourceInfo`` of a source, or a DataError naming it when its shards cannot
    feed this run: another kind than declared, another codebook than the model's, a
    mixture of VQGANs, or no usable record among the first ones."""
    where = f"data source {name!r} ({path})"
    manifests = {str(f): manifest.read(f) for f in {manifest.folder_of(x) for x in files}}
    manifests = {k: m for k, m in manifests.items() if m is not None}
    first = _first_records(files, PROBE_RECORDS)
    kinds = {m.kind for m in manifests.values()} or {k for k in map(_record_kind, first[:1]) if k}
    if len(kinds) > 1:
        raise DataError(f"{where} mixes text and image shards; give each kind its own source")
    if not kinds:
        raise DataError(f"{where}: no readable record to tell its kind; the shards are empty or damaged")
    (kind,) = kinds
    if declared_kind and declared_kind != kind:
        raise DataError(f"{where} is declared kind {declared_kind!r} but holds {kind} shards; "
                        f"set its \"kind\" to {kind!r} (or leave it out)")
    vqgans = {m.vqgan for m in manifests.values() if m.vqgan is not None}
    if len(vqgans) > 1:
        raise DataError(f"{where} mixes shards of different VQGANs: {sorted(v.fingerprint for v in vqgans)}")
    vqgan = next(iter(vqgans), None)
    if vqgan is not None and vqgan.num_image_codes != num_image_codes:
        raise DataError(f"{where} holds codes of a {vqgan.num_image_codes}-code VQGAN but the model has "
                        f"{num_image_codes} image codes; pre-tokenize with the model's VQGAN or set "
                        "model.num_image_codes to match")
    reasons: collections.Counter = collections.Counter()
    grids = collections.Counter()
    for raw in first:
        try:
            if kind == "text":
                records.decode_text_record(raw)
            else:
                rec = records.decode_image_record(raw, num_image_codes)
                grids[(rec.h, rec.w)] += 1
        except records.RecordError as e:
            reasons[e.reason] += 1
    if first and sum(reasons.values()) == len(first):
        raise DataError(f"{where}: none of its first {len(first)} records is usable "
                        f"({dict(reasons)}); check the shards and the model's image codes")
    recorded = tuple(g for m in manifests.values() for g in m.grids)
    return SourceInfo(kind=kind, vqgan=vqgan, grids=tuple(dict.fromkeys(recorded or [g for g, _ in grids.most_common()])))
