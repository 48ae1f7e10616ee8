"""The Grain pipeline end to end: every packed document checked against DESIGN.md
section 2, packing efficiency, mixture weights, long documents, exact resume in a new
process, bad input, and global arrays on a mesh."""

import json
import os
import subprocess
import sys
import textwrap

import grain
import msgpack
import numpy as np
import pytest

from liquid_jax.data import packing, pipeline, records
from liquid_jax.data.shards import write_shard
from liquid_jax.sharding import make_mesh
from helpers.data_support import (
    GEMMA,
    TEXT_VOCAB,
    image_records,
    sentence,
    sp,  # noqa: F401 (fixture)
    text_records,
    tok,  # noqa: F401 (fixture)
    write_image_shards,
    write_text_shards,
)
from test_data_sequences import SPEC_SUFFIXES

CODEBOOK = 8192


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Image records with 4x4 and 3x5 grids, short text documents."""
    d = str(tmp_path_factory.mktemp("small"))
    rng = np.random.default_rng(1)
    imgs = image_records(rng, 40, (4, 4), CODEBOOK, "sq") + image_records(rng, 40, (3, 5), CODEBOOK, "wide")
    texts = text_records(rng, 80, (2, 30), "doc")
    write_image_shards(os.path.join(d, "img"), imgs, 3)
    write_text_shards(os.path.join(d, "txt"), texts, 2)
    return d, imgs, texts


def config(sources, **kw):
    c = pipeline.default_config()
    c.sources = sources
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def iterator(c, tok, **kw):
    ds, built = pipeline.build_dataset(c, tok, GEMMA, TEXT_VOCAB, process_index=0, process_count=1)
    return pipeline.DataIterator(ds, TEXT_VOCAB, bad_shards=built.bad_shards, **kw)


def documents(batch):
    """Yields (ids, labels) of every document in a numpy batch, checking the row layout."""
    for b in range(batch["tokens"].shape[0]):
        seg, pos = batch["segment_ids"][b], batch["positions"][b]
        for s in np.unique(seg[seg > 0]):
            idx = np.flatnonzero(seg == s)
            assert (np.diff(idx) == 1).all(), "a document must be contiguous in its row"
            assert pos[idx].tolist() == list(range(len(idx)))
            tokens, targets, mask = (batch[k][b, idx] for k in ("tokens", "targets", "loss_mask"))
            assert (tokens[1:] == targets[:-1]).all(), "targets must be the next token"
            ids = np.concatenate([tokens, targets[-1:]])
            labels = np.concatenate([[0], mask])
            yield ids.tolist(), labels.tolist()
        pad = seg == 0
        assert (batch["loss_mask"][b, pad] == 0).all() and (batch["tokens"][b, pad] == GEMMA.pad).all()


def expected_image_doc(sp, ids, by_codes):
    """The sequence DESIGN.md prescribes for the record whose codes appear in ``ids``."""
    boi = ids.index(7)
    rec = None
    for n in {16, 15}:
        rec = rec or by_codes.get(tuple(t - TEXT_VOCAB for t in ids[boi + 1 : boi + 1 + n]))
    assert rec is not None, "image codes must be those of a source record"
    image = [TEXT_VOCAB + int(c) for c in rec.codes]
    if boi == 1:  # caption mode
        prompt, cap = sp.encode("The caption of this image is:"), sp.encode(rec.caption)
        want = [2, 7] + image + [8] + prompt + cap + [1]
        return "caption", want, [0] * (len(want) - len(cap) - 1) + [1] * (len(cap) + 1)
    if ids[1] == 9:
        head, mode = [2, 9, 7], "uncond"
    else:
        text = sp.decode(ids[1:boi])
        suffix = [s for s in SPEC_SUFFIXES if text == rec.caption + s]
        assert len(suffix) == 1, f"text {text!r} is not caption + one of the ten suffixes"
        head, mode = [2] + sp.encode(rec.caption + suffix[0]) + [7], "t2i"
    want = head + image + [8, 1]
    return mode, want, [0] * len(head) + [1] * (len(image) + 2)


def test_every_document_matches_design(tok, sp, small_data):
    d, imgs, texts = small_data
    by_codes = {tuple(int(c) for c in r.codes): r for r in imgs}
    by_text = {r.text: r for r in texts}
    c = config(
        [
            {"name": "img", "path": os.path.join(d, "img"), "kind": "image", "weight": 2},
            {"name": "txt", "path": os.path.join(d, "txt"), "kind": "text", "weight": 1},
        ],
        seq_len=128,
        batch_size=4,
        t2i_ratio=0.5,
        cfg_drop=0.3,
        packing_bins=8,
    )
    it = iterator(c, tok)
    modes = {"caption": 0, "uncond": 0, "t2i": 0, "text": 0}
    for _ in range(30):
        batch = it.next_numpy()
        assert all(batch[k].shape == (4, 128) and batch[k].dtype == np.int32 for k in pipeline.BATCH_KEYS)
        for ids, labels in documents(batch):
            if 7 in ids:
                mode, want, want_labels = expected_image_doc(sp, ids, by_codes)
            else:
                text = sp.decode(ids[1:-1])
                assert text in by_text
                mode, want, want_labels = "text", [2] + sp.encode(text) + [1], [1] * len(ids)
            assert ids == want
            assert labels[1:] == want_labels[1:]  # the first id is never a target
            modes[mode] += 1
    assert all(n > 5 for n in modes.values()), modes
    counted = it.counters
    assert counted["examples_text"] >= modes["text"]
    assert counted["examples_t2i"] >= modes["t2i"] + modes["uncond"]
    assert counted["tokens_image"] > 0 and counted["tokens_text"] > 0


def test_size_prefix_in_pipeline(tok, sp, small_data):
    d, _, _ = small_data
    c = config(
        [{"path": os.path.join(d, "img"), "kind": "image", "weight": 1}],
        seq_len=128, batch_size=2, size_prefix=True, t2i_ratio=0.0, packing_bins=4,
    )
    batch = iterator(c, tok).next_numpy()
    for ids, _ in documents(batch):
        n = 16 if sp.decode(ids[1 : ids.index(7)]).endswith("Width is 64 Height is 64.") else 15
        prefix = "Image Size: Width is 64 Height is 64." if n == 16 else "Image Size: Width is 80 Height is 48."
        assert sp.decode(ids[1 : ids.index(7)]) == prefix


def test_fit_to_row_policies():
    rows = np.arange(30).reshape(10, 3)
    pieces, cut = packing.fit_to_row(rows, 4, "split")
    assert cut and [len(p) for p in pieces] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(pieces), rows)
    pieces, cut = packing.fit_to_row(rows, 4, "truncate")
    assert cut and len(pieces) == 1 and (pieces[0] == rows[:4]).all()
    assert packing.fit_to_row(rows, 4, "drop") == ([], True)
    assert packing.fit_to_row(rows, 10, "drop")[1] is False
    with pytest.raises(ValueError, match="long-document policy"):
        packing.fit_to_row(rows, 4, "wrap")


@pytest.mark.parametrize("policy", ["split", "truncate", "drop"])
def test_long_documents(tok, sp, tmp_path, policy):
    rng = np.random.default_rng(5)
    texts = text_records(rng, 12, (60, 80), "long")  # all longer than a 64-token row
    write_text_shards(str(tmp_path), texts, 1)
    c = config(
        [{"path": str(tmp_path), "kind": "text"}],
        seq_len=64, batch_size=1, num_epochs=1, long_document=policy, packing_bins=4,
    )
    it = iterator(c, tok)
    pieces = [ids for batch in it_numpy(it) for ids, _ in documents(batch)]
    full = {tuple([2] + sp.encode(r.text) + [1]) for r in texts}
    if policy == "drop":
        assert pieces == [] and it.counters["dropped_too_long"] == 12
        return
    assert it.counters["truncated"] == 12
    assert all(len(p) <= 65 for p in pieces)
    if policy == "truncate":
        assert len(pieces) == 12
        assert {tuple(p) for p in pieces} == {f[:65] for f in full}
    else:
        # Consecutive pieces overlap by one id (the last target is the next input).
        starts = [p for p in pieces if p[0] == 2]
        assert len(starts) == 12
        total = sum(len(p) - 1 for p in pieces)
        assert total == sum(len(f) - 1 for f in full)


def it_numpy(it):
    while True:
        try:
            yield it.next_numpy()
        except StopIteration:
            return


def test_packing_efficiency_at_2048(tok, tmp_path):
    rng = np.random.default_rng(7)
    imgs = image_records(rng, 150, (32, 32), CODEBOOK, "img")
    lengths = np.clip(rng.lognormal(np.log(150), 1.0, size=600).astype(int), 5, 3000)
    texts = [records.TextRecord(sentence(rng, int(n)), f"t{i}") for i, n in enumerate(lengths)]
    write_image_shards(str(tmp_path / "img"), imgs, 2)
    write_text_shards(str(tmp_path / "txt"), texts, 2)
    c = config(
        [
            {"path": str(tmp_path / "img"), "kind": "image", "weight": 0.2},
            {"path": str(tmp_path / "txt"), "kind": "text", "weight": 0.8},
        ],
        seq_len=2048, batch_size=8,
    )
    it = iterator(c, tok)
    segs = []
    for _ in range(100):
        batch = it.next_numpy()
        segs.append(batch["segment_ids"])
    eff = packing.packing_efficiency(np.stack(segs))
    image_share = it.counters["tokens_image"] / (it.counters["tokens_image"] + it.counters["tokens_text"])
    assert eff >= 0.95, eff
    assert image_share > 0.2, image_share  # a real mixture, not text-only
    assert it.counters["padding"] == np.sum(np.stack(segs) == 0)


def test_mixture_fractions(tok, sp, tmp_path):
    weights = {"alpha": 0.5, "beta": 0.3, "gamma": 0.2}
    sources = []
    for name in weights:
        recs = [records.TextRecord(f"{name} doc {i}", f"{name}{i}") for i in range(3000)]
        write_text_shards(str(tmp_path / name), recs, 2)
        sources.append({"name": name, "path": str(tmp_path / name), "kind": "text", "weight": weights[name]})
    c = config(sources, seq_len=256, batch_size=8, packing_bins=16)
    it = iterator(c, tok)
    counts = dict.fromkeys(weights, 0)
    while sum(counts.values()) < 10_000:
        for ids, _ in documents(it.next_numpy()):
            counts[sp.decode(ids[1:-1]).split()[0]] += 1
    total = sum(counts.values())
    for name, w in weights.items():
        assert abs(counts[name] / total - w) < 0.02, (counts, total)


RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ml_collections
    from liquid_jax.data import pipeline
    from liquid_jax.model.config import SpecialTokens
    from liquid_jax.tokenizer.text import SentencePieceTokenizer
    args = json.load(open(sys.argv[1]))
    c = ml_collections.ConfigDict(args["config"])
    ds, _ = pipeline.build_dataset(c, SentencePieceTokenizer(args["tokenizer"]), SpecialTokens(),
                                   args["text_vocab"], process_index=0, process_count=1)
    it = pipeline.DataIterator(ds, args["text_vocab"])
    it.set_state(args["state"])
    out = {}
    for i in range(args["steps"]):
        for k, v in it.next_numpy().items():
            out[f"{i}/{k}"] = v
    np.savez(sys.argv[2], **out)
    json.dump(it.counters, open(sys.argv[2] + ".json", "w"))
    """
)


def test_resume_in_new_process(tok, small_data, tmp_path):
    d, _, _ = small_data
    c = config(
        [
            {"name": "img", "path": os.path.join(d, "img"), "kind": "image", "weight": 1},
            {"name": "txt", "path": os.path.join(d, "txt"), "kind": "text", "weight": 1},
        ],
        seq_len=96, batch_size=3, packing_bins=5, seed=3,
    )
    it = iterator(c, tok)
    for _ in range(7):
        it.next_numpy()
    state = json.loads(json.dumps(it.get_state()))  # must survive JSON
    expected = [it.next_numpy() for _ in range(6)]
    args = {"config": c.to_dict(), "tokenizer": tok.path, "text_vocab": TEXT_VOCAB, "state": state, "steps": 6}
    (tmp_path / "args.json").write_text(json.dumps(args))
    out = tmp_path / "resumed.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path / "args.json"), str(out)],
                   check=True, env=env, timeout=300)
    got = np.load(out)
    for i, batch in enumerate(expected):
        for k in pipeline.BATCH_KEYS:
            np.testing.assert_array_equal(got[f"{i}/{k}"], batch[k], err_msg=f"batch {i} {k}")
    assert json.loads((tmp_path / "resumed.npz.json").read_text()) == it.counters


def test_same_seed_same_batches_other_seed_differs(tok, small_data):
    d, _, _ = small_data
    srcs = [
        {"path": os.path.join(d, "img"), "kind": "image", "weight": 1},
        {"path": os.path.join(d, "txt"), "kind": "text", "weight": 1},
    ]
    runs = []
    for seed in (0, 0, 1):
        it = iterator(config(srcs, seq_len=96, batch_size=2, packing_bins=4, seed=seed), tok)
        runs.append(np.stack([it.next_numpy()["tokens"] for _ in range(4)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_bad_input_is_skipped_and_counted(tok, tmp_path):
    rng = np.random.default_rng(3)
    good_img = [records.encode_image_record(r) for r in image_records(rng, 10, (2, 2), 16, "ok")]
    bad_img = [
        good_img[0][: len(good_img[0]) // 2],  # truncated record
        b"\x00\xffnot msgpack at all",  # corrupt
        records.encode_image_record(records.ImageRecord("a cat.", np.array([1, 2, 3, 99]), 2, 2, "oor")),
        records.encode_image_record(records.ImageRecord("   ", np.array([1, 2, 3, 4]), 2, 2, "empty")),
    ]
    write_shard(tmp_path / "img" / records.shard_name("img", 0, 2), good_img + bad_img)
    # A shard cut in half: ArrayRecord cannot open it at all.
    whole = tmp_path / "whole.array_record"
    write_shard(whole, good_img)
    data = whole.read_bytes()
    (tmp_path / "img" / records.shard_name("img", 1, 2)).write_bytes(data[: len(data) // 2])
    good_txt = [records.encode_text_record(r) for r in text_records(rng, 10, (2, 5), "t")]
    bad_txt = [
        msgpack.packb({"v": 1, "text": b"caf\xe9 au lait", "key": "latin1"}, use_bin_type=False),
        records.encode_text_record(records.TextRecord("", "empty")),
    ]
    write_shard(tmp_path / "txt" / records.shard_name("txt", 0, 2), good_txt + bad_txt)
    # A shard with damaged bytes in the middle: ArrayRecord opens it, some chunks fail.
    damaged = tmp_path / "txt" / records.shard_name("txt", 1, 2)
    write_shard(damaged, [records.encode_text_record(r) for r in text_records(rng, 10, (2, 5), "d")])
    data = bytearray(damaged.read_bytes())
    for i in range(400, 440):  # inside the record chunks (the file is padded to 128 KiB)
        data[i] ^= 0xFF
    damaged.write_bytes(bytes(data))
    src = grain.sources.ArrayRecordDataSource([str(damaged)])
    unreadable = 0
    for i in range(len(src)):
        try:
            src[i]
        except Exception:
            unreadable += 1
    assert 0 < unreadable < 10
    counters, n_docs = {}, 0
    for kind in ("img", "txt"):
        c = config(
            [{"path": str(tmp_path / kind), "kind": "image" if kind == "img" else "text"}],
            seq_len=256, batch_size=1, num_epochs=1, num_image_codes=16, packing_bins=4,
        )
        it = iterator(c, tok)
        n_docs += sum(1 for batch in it_numpy(it) for _ in documents(batch))
        counters |= {k: v for k, v in it.counters.items() if v}
    assert n_docs == 30 - unreadable
    assert counters["skipped_read_error"] == unreadable
    assert counters["skipped_corrupt"] == 2
    assert counters["skipped_code_out_of_range"] == 1
    assert counters["skipped_empty_caption"] == 1
    assert counters["skipped_bad_utf8"] == 1
    assert counters["skipped_empty_text"] == 1
    it = iterator(config([{"path": str(tmp_path / "img"), "kind": "image"}]), tok)
    assert it.counters["skipped_shards"] == 1
    assert it.bad_shards == [str(tmp_path / "img" / records.shard_name("img", 1, 2))]


def test_config_errors_name_the_source(tok, small_data, tmp_path):
    d, _, _ = small_data
    with pytest.raises(ValueError, match=r"sources\[1\].*kind 'video'"):
        iterator(config([{"path": os.path.join(d, "img"), "kind": "image"}, {"path": d, "kind": "video"}]), tok)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        iterator(config([{"path": str(tmp_path / "nowhere"), "kind": "text"}]), tok)
    with pytest.raises(ValueError, match="weight"):
        iterator(config([{"path": os.path.join(d, "txt"), "kind": "text", "weight": 0}]), tok)


def test_global_arrays_on_mesh(tok, small_data):
    import jax

    d, _, _ = small_data
    mesh = make_mesh({"data": 4, "fsdp": 2})
    c = config([{"path": os.path.join(d, "txt"), "kind": "text"}], seq_len=64, batch_size=8, packing_bins=8)
    batch = next(iterator(c, tok, mesh=mesh))
    for k in pipeline.BATCH_KEYS:
        assert isinstance(batch[k], jax.Array) and batch[k].shape == (8, 64)
        assert batch[k].sharding.spec[0] == ("data", "fsdp")
        assert len(batch[k].addressable_shards) == 8
        assert batch[k].addressable_shards[0].data.shape == (1, 64)


def test_resume_inside_split_documents(tok, tmp_path):
    """States taken while a long document's pieces are still being packed restore exactly."""
    rng = np.random.default_rng(9)
    write_text_shards(str(tmp_path), text_records(rng, 30, (5, 120), "mixed"), 2)
    c = config([{"path": str(tmp_path), "kind": "text"}], seq_len=48, batch_size=2, packing_bins=3)
    it = iterator(c, tok)
    states, batches = [], []
    for _ in range(40):
        states.append(json.loads(json.dumps(it.get_state())))
        batches.append(it.next_numpy())
    assert it.counters["truncated"] > 5  # many documents were split into pieces
    for start in (3, 11, 26):
        again = iterator(c, tok)
        again.set_state(states[start])
        for want in batches[start : start + 8]:
            got = again.next_numpy()
            for k in pipeline.BATCH_KEYS:
                np.testing.assert_array_equal(got[k], want[k])
