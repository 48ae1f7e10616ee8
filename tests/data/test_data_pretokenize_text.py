"""``pretokenize text``: JSONL / TXT / Parquet -> ArrayRecord, bad documents reported,
resumable, split over workers, and readable by the pipeline."""

import json
import os
import subprocess
import sys

import grain
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from liquid_jax.data import records
from liquid_jax.data.pretokenize_text import pretokenize_text


def read_shard(path):
    source = grain.sources.ArrayRecordDataSource([str(path)])
    return [records.decode_text_record(source[i]) for i in range(len(source))]


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    lines = [
        json.dumps({"id": "a", "text": "first document.\nwith two lines"}),
        "{not json",
        json.dumps({"id": "b", "text": "   "}),
        json.dumps({"id": "c", "body": "no text field"}),
        "",
        json.dumps({"text": "no id, ünïcödé ✓"}),
    ]
    raw = "\n".join(lines).encode() + b"\n" + b'{"id": "bad", "text": "caf\xe9"}\n'
    (d / "docs.jsonl").write_bytes(raw)
    (d / "book.txt").write_text("Chapter one.\n\nIt was a dark night.")
    (d / "lines.txt").write_bytes(b"line one\n\nline two\n\xff\xfe broken\n")
    table = pa.table({"id": ["p0", "p1", "p2"], "text": ["parquet row zero", None, "row two"]})
    pq.write_table(table, d / "part.parquet")
    return d


def test_formats_reports_and_keys(inputs, tmp_path):
    out = tmp_path / "out"
    totals = pretokenize_text([str(inputs / "*")], str(out))
    names = sorted(f for f in os.listdir(out) if f.endswith(".array_record"))
    assert names == [records.shard_name("text", i, 4) for i in range(4)]  # sorted inputs
    by_input = {}
    for name in names:
        report = json.loads((out / (name + ".report.json")).read_text())
        by_input[os.path.basename(report["input"])] = (read_shard(out / name), report)
    docs, report = by_input["docs.jsonl"]
    assert [(d.key, d.text) for d in docs] == [
        ("a", "first document.\nwith two lines"),
        ("docs.jsonl:6", "no id, ünïcödé ✓"),
    ]
    where = {os.path.basename(s["where"]): s["reason"] for s in report["skipped"]}
    assert where["docs.jsonl:2"].startswith("bad_json")
    assert where["docs.jsonl:3"] == "empty_text"
    assert where["docs.jsonl:4"] == "missing_text"
    assert where["docs.jsonl:7"] == "bad_utf8"
    assert len(where) == 4 and report["written"] == 2
    docs, _ = by_input["book.txt"]
    assert [(d.key, d.text) for d in docs] == [("book.txt", "Chapter one.\n\nIt was a dark night.")]
    docs, report = by_input["part.parquet"]
    assert [(d.key, d.text) for d in docs] == [("p0", "parquet row zero"), ("p2", "row two")]
    assert [s["reason"] for s in report["skipped"]] == ["missing_text"]
    docs, report = by_input["lines.txt"]  # file mode: one bad byte skips the whole file
    assert docs == [] and [s["reason"] for s in report["skipped"]] == ["bad_utf8"]
    assert totals == {"documents": 5, "skipped": 6, "shards_written": 4, "shards_already_done": 0}


def test_line_mode(inputs, tmp_path):
    pretokenize_text([str(inputs / "lines.txt")], str(tmp_path / "o"), txt_mode="line")
    shard = tmp_path / "o" / records.shard_name("text", 0, 1)
    assert [(d.key, d.text) for d in read_shard(shard)] == [("lines.txt:1", "line one"), ("lines.txt:3", "line two")]
    report = json.loads((tmp_path / "o" / (shard.name + ".report.json")).read_text())
    assert [(os.path.basename(s["where"]), s["reason"]) for s in report["skipped"]] == [("lines.txt:4", "bad_utf8")]


def test_workers_split_and_resume(inputs, tmp_path):
    out = tmp_path / "out"
    a = pretokenize_text([str(inputs / "*")], str(out), worker=(0, 2))
    assert a["shards_written"] == 2
    done = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith(".array_record")}
    assert sorted(done) == [records.shard_name("text", i, 4) for i in (0, 2)]
    b = pretokenize_text([str(inputs / "*")], str(out), worker=(1, 2))
    assert b["shards_written"] == 2
    again = pretokenize_text([str(inputs / "*")], str(out))
    assert again["shards_written"] == 0 and again["shards_already_done"] == 4
    for f, mtime in done.items():
        assert os.stat(out / f).st_mtime_ns == mtime
    assert not [f for f in os.listdir(out) if ".tmp-" in f]


def test_cli_and_pipeline_read_back(inputs, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_jax.cli", "pretokenize", "text", f"--input={inputs}/*.jsonl",
         f"--input={inputs}/*.parquet", f"--output={out}", "--prefix=web"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["documents"] == 4
    assert sorted(f for f in os.listdir(out) if f.endswith(".array_record")) == [
        records.shard_name("web", i, 2) for i in range(2)
    ]


def test_unknown_extension_and_missing_column(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"x\.csv.*unknown text input extension"):
        pretokenize_text([str(tmp_path / "x.csv")], str(tmp_path / "o"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "y.parquet")
    with pytest.raises(ValueError, match=r"y\.parquet: no column 'text'"):
        pretokenize_text([str(tmp_path / "y.parquet")], str(tmp_path / "o"))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        pretokenize_text([str(tmp_path / "none*.jsonl")], str(tmp_path / "o"))
