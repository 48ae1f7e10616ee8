"""JSONL / TXT / Parquet documents -> ArrayRecord shards of text records.

Text is stored raw (tokenization happens in the input pipeline), one output shard per
input file, ``{prefix}-{i:05d}-of-{n:05d}.array_record`` for the i-th input in sorted
order. Unusable documents (invalid UTF-8 or JSON, missing or empty text) are skipped
and listed, with their line or row, in ``<shard>.report.json``. Finished shards are
skipped on a re-run; the inputs are split over workers round-robin. The folder's
``dataset.json`` (``manifest``) records the settings and the inputs (file names and
sizes); a run with other ones is refused before any work, or with ``overwrite``
replaces every shard.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Iterator

from tqdm import tqdm

from liquid_jax import paths
from liquid_jax.data import manifest, records, shards
from liquid_jax.errors import UserError

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt", ".parquet": "parquet"}
TXT_MODES = ("file", "line")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A document that was not written: where it was and why."""

    where: str
    reason: str


def expand_inputs(patterns: list[str]) -> list[str]:
    """Sorted files matched by paths or globs; raises if a pattern matches nothing."""
    files = set()
    for pattern in patterns:
        matched = glob.glob(os.path.expanduser(pattern))
        if not matched:
            raise FileNotFoundError(f"--input {pattern!r} matches no file")
        files.update(matched)
    return sorted(files)


def input_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"{path}: unknown text input extension {ext!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[ext]


def _document(text, key: str, where: str) -> records.TextRecord | Skipped:
    if not isinstance(text, str):
        return Skipped(where, "missing_text")
    if not text.strip():
        return Skipped(where, "empty_text")
    return records.TextRecord(text=text, key=key)


def _read_jsonl(path: str, text_field: str, key_field: str) -> Iterator[records.TextRecord | Skipped]:
    name = os.path.basename(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                yield Skipped(where, "bad_utf8")
                continue
            except json.JSONDecodeError as e:
                yield Skipped(where, f"bad_json: {e.msg}")
                continue
            if not isinstance(obj, dict):
                yield Skipped(where, "not_an_object")
                continue
            yield _document(obj.get(text_field), str(obj.get(key_field, f"{name}:{lineno}")), where)


def _read_txt(path: str, mode: str) -> Iterator[records.TextRecord | Skipped]:
    name = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    if mode == "file":
        try:
            yield _document(data.decode("utf-8"), name, path)
        except UnicodeDecodeError:
            yield Skipped(path, "bad_utf8")
        return
    for lineno, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield _document(raw.decode("utf-8"), f"{name}:{lineno}", f"{path}:{lineno}")
        except UnicodeDecodeError:
            yield Skipped(f"{path}:{lineno}", "bad_utf8")


def _read_parquet(path: str, text_field: str, key_field: str) -> Iterator[records.TextRecord | Skipped]:
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_field not in names:
        raise UserError(f"{path}: no column {text_field!r} (columns: {names}); set --text_field")
    columns = [text_field] + ([key_field] if key_field in names else [])
    row = 0
    for batch in pf.iter_batches(columns=columns):
        table = batch.to_pydict()
        keys = table.get(key_field, [None] * batch.num_rows)
        for text, key in zip(table[text_field], keys):
            yield _document(text, str(key if key is not None else f"{name}:{row}"), f"{path}:row {row}")
            row += 1


def read_documents(
    path: str, text_field: str = "text", key_field: str = "id", txt_mode: str = "file"
) -> Iterator[records.TextRecord | Skipped]:
    """Documents of one input file, in file order."""
    fmt = input_format(path)
    if fmt == "jsonl":
        return _read_jsonl(path, text_field, key_field)
    if fmt == "parquet":
        return _read_parquet(path, text_field, key_field)
    if txt_mode not in TXT_MODES:
        raise ValueError(f"txt mode {txt_mode!r}; expected one of {TXT_MODES}")
    return _read_txt(path, txt_mode)


def pretokenize_text(
    inputs: list[str],
    output_dir: str,
    *,
    prefix: str = "text",
    text_field: str = "text",
    key_field: str = "id",
    txt_mode: str = "file",
    worker: tuple[int, int] = (0, 1),
    overwrite: bool = False,
) -> dict[str, int]:
    """Writes this worker's shards; returns counts of written, skipped and resumed."""
    files = expand_inputs(inputs)
    for f in files:
        input_format(f)  # every extension is known before the first shard is written
    index, count = worker
    mine = list(range(len(files)))[index::count]
    names = {i: records.shard_name(prefix, i, len(files)) for i in mine}
    made = manifest.Manifest(
        kind="text",
        settings={"prefix": prefix, "text_field": text_field, "key_field": key_field, "txt_mode": txt_mode},
        inputs=hashlib.sha256(json.dumps(
            [[os.path.basename(f), os.path.getsize(f)] for f in files]).encode()).hexdigest()[:16],
    )
    manifest.prepare(output_dir, made, list(names.values()), overwrite=overwrite, single_worker=count == 1)
    folder = paths.resolve(output_dir)
    totals = {"documents": 0, "skipped": 0, "shards_written": 0, "shards_already_done": 0}
    progress = tqdm(total=len(mine), desc=f"text shards (worker {index}/{count})", unit="shard")
    for i in mine:
        out = os.fspath(folder / names[i])
        progress.update(1)
        if shards.exists(out):
            totals["shards_already_done"] += 1
            continue
        skipped = []
        with shards.ShardWriter(out) as writer:
            for doc in read_documents(files[i], text_field, key_field, txt_mode):
                if isinstance(doc, Skipped):
                    skipped.append(dataclasses.asdict(doc))
                else:
                    writer.write(records.encode_text_record(doc))
        shards.write_json_atomic(
            out + ".report.json", {"input": files[i], "written": writer.count, "skipped": skipped}
        )
        progress.set_postfix(docs=totals["documents"] + writer.count)
        totals["documents"] += writer.count
        totals["skipped"] += len(skipped)
        totals["shards_written"] += 1
    progress.close()
    return totals
