"""What a folder of pre-tokenized shards holds: ``<folder>/dataset.json``.

Written by the pre-tokenizers before the first shard, read by training before the first
step::

    {"format_version": 1, "kind": "image" | "text",
     "settings": {how the shards were made: resolution, prefix, fields, ...},
     "inputs": fingerprint of what was read (caption table, file names and sizes),
     "vqgan": {"fingerprint", "num_image_codes", "pixels_per_code"},  # image shards
     "grids": [[h, w], ...]}                                          # image shards

Manifests of earlier versions name ``num_image_codes`` ``codebook_size``; it reads as the
former (``liquid_jax.former_names``).

A folder holds the shards of one manifest: the pre-tokenizers refuse to add shards made
with other settings, inputs or VQGAN, and training refuses image shards whose codebook
is not the model's. Shards without a manifest (written by hand) are read with their
kind taken from their first record.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from etils import epath

from liquid_jax import former_names, paths
from liquid_jax.data.records import SHARD_SUFFIX
from liquid_jax.errors import UserError

MANIFEST_FILE = "dataset.json"
FORMAT_VERSION = 1
KINDS = ("text", "image")


@dataclasses.dataclass(frozen=True)
class VQGANInfo:
    """The VQGAN whose codes image shards hold."""

    fingerprint: str
    num_image_codes: int
    pixels_per_code: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The description of one folder of shards (see the module docstring)."""

    kind: str
    settings: Mapping[str, Any]
    inputs: str
    vqgan: VQGANInfo | None = None
    grids: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": self.kind,
                             "settings": dict(self.settings), "inputs": self.inputs}
        if self.vqgan is not None:
            d["vqgan"] = dataclasses.asdict(self.vqgan)
            d["grids"] = [list(g) for g in self.grids]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Manifest":
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {d.get('format_version')!r}, this code reads {FORMAT_VERSION}")
        if d.get("kind") not in KINDS:
            raise ValueError(f"kind {d.get('kind')!r} is not one of {KINDS}")
        vqgan = d.get("vqgan")
        return cls(
            kind=d["kind"], settings=dict(d.get("settings", {})), inputs=str(d.get("inputs", "")),
            vqgan=None if vqgan is None else VQGANInfo(**former_names.current(vqgan, former_names.MANIFEST_VQGAN)),
            grids=tuple(tuple(int(x) for x in g) for g in d.get("grids", ())),
        )

    def differences(self, other: "Manifest") -> list[str]:
        """``what: this vs other`` for everything that makes two folders' shards differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        lines = []
        for key in ("kind", "inputs", "vqgan", "grids"):
            if mine.get(key) != theirs.get(key):
                lines.append(f"{key}: {mine.get(key)!r} vs {theirs.get(key)!r}")
        for key in sorted(set(self.settings) | set(other.settings)):
            if self.settings.get(key) != other.settings.get(key):
                lines.append(f"settings.{key}: {self.settings.get(key)!r} vs {other.settings.get(key)!r}")
        return lines


def read(folder: str | os.PathLike) -> Manifest | None:
    """The manifest of ``folder``, or None when it has none."""
    path = paths.resolve(folder) / MANIFEST_FILE
    if not path.exists():
        return None
    try:
        return Manifest.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path}: not a shard manifest ({e}); remove the folder and pre-tokenize again") from e


def write(folder: str | os.PathLike, manifest: Manifest) -> None:
    """Writes ``folder/dataset.json`` atomically (every worker may write the same one)."""
    folder = paths.resolve(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_FILE
    tmp = folder / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=1, sort_keys=True))
    tmp.replace(path)


def folder_of(shard: str | os.PathLike) -> epath.Path:
    """The folder whose manifest describes ``shard``."""
    return paths.resolve(shard).parent


def _our_files(folder: epath.Path) -> list[epath.Path]:
    """Shards, their reports, temporary files and the manifest: what ``prepare`` may delete."""
    names = (f"*{SHARD_SUFFIX}", f"*{SHARD_SUFFIX}.report.json", ".*.tmp-*", "report.json", MANIFEST_FILE)
    return sorted({f for pattern in names for f in folder.glob(pattern)})


def prepare(
    folder: str | os.PathLike,
    manifest: Manifest,
    my_shards: list[str],
    *,
    overwrite: bool = False,
    single_worker: bool = True,
) -> None:
    """Makes ``folder`` ready for this worker's shards of ``manifest``, before any work.

    A folder made with another manifest (or holding shards without one) is refused, or
    with ``overwrite`` (one worker only) emptied of every shard first. Temporary files
    left by a killed run of this worker's shards (``my_shards``, file names) are removed.
    """
    where = os.fspath(folder)
    folder = paths.resolve(folder)
    existing = read(folder) if folder.exists() else None
    shards = list(folder.glob(f"*{SHARD_SUFFIX}")) if folder.exists() else []
    if existing is None and not shards:
        differences = []
    elif existing is None:
        differences = [f"{len(shards)} shards without a {MANIFEST_FILE} (made by hand or by an older version)"]
    else:
        differences = existing.differences(manifest)
    if differences:
        if not overwrite:
            raise UserError(
                f"{where} already holds shards made otherwise (folder vs this run: {'; '.join(differences)}); "
                f"use another --output, or --overwrite to replace its {len(shards)} shards"
            )
        if not single_worker:
            raise UserError(f"--overwrite of {where} needs a single worker; empty the folder first")
        for f in _our_files(folder):
            f.unlink()
    for name in my_shards:
        for stale in list(folder.glob(f".{name}.tmp-*")) + list(folder.glob(f".{name}.report.json.tmp-*")):
            stale.unlink(missing_ok=True)
    write(folder, manifest)
