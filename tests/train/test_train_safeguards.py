"""Mismatches between the parts are refused before work starts, and nothing spins or
disappears silently: shard manifests, kinds and codebooks checked at start-up, skip
guards, data counters in the metrics, pre-tokenizing into a folder made otherwise, and
a damaged newest checkpoint passed by."""

import json
import logging
import os
import shutil

import numpy as np
import PIL.Image
import pytest

from helpers import train_support as support, data_support
from helpers.sample_models import tiny_vqgan
from liquid_jax.checkpoint import model as model_checkpoint
from liquid_jax.codec import ImageCodec
from liquid_jax.data import captioned_images, manifest, pipeline, records, sources
from liquid_jax.data.pretokenize_images import pretokenize_images
from liquid_jax.data.pretokenize_text import pretokenize_text
from liquid_jax.data.shards import write_shard
from liquid_jax.errors import UserError
from liquid_jax.train import metrics, trainer


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory):
    return support.write_mixed_data(str(tmp_path_factory.mktemp("data")))


def picture_folder(directory, n=12, captions=None):
    """``n`` small PNGs and a caption table; returns the folder units of it."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        PIL.Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(f"{directory}/{i}.png")
        rows.append({"image": f"{i}.png", "caption": (captions or "a picture number {}").format(i)})
    table = os.path.join(directory, "captions.jsonl")
    with open(table, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return captioned_images.folder_units(directory, table, "image", "caption", per_shard=100)


def test_image_shards_of_another_codebook_are_refused_at_start(data_paths, tmp_path):
    units = picture_folder(str(tmp_path / "pics"))
    pretokenize_images(units, str(tmp_path / "big"), ImageCodec(tiny_vqgan(num_image_codes=256)), resolution=8)
    config = support.tiny_config(data_paths)
    config.data.sources = ({"path": data_paths["text"]}, {"path": str(tmp_path / "big")})
    with pytest.raises(pipeline.DataError, match="codes of a 256-code VQGAN but the model has 64 image codes"):
        trainer.train(config, str(tmp_path / "run"))
    # Shards written by hand carry no manifest: their first records are probed instead.
    rng = np.random.default_rng(0)
    hand = [records.encode_image_record(r) for r in data_support.image_records(rng, 20, (4, 4), 256, "x")]
    write_shard(tmp_path / "hand" / records.shard_name("img", 0, 1), hand)
    config.data.sources = ({"path": str(tmp_path / "hand")},)
    with pytest.raises(pipeline.DataError, match=r"none of its first 20 records is usable \({'code_out_of_range'"):
        trainer.train(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "tokenizer")  # refused before anything was written


@pytest.mark.parametrize("declared, holds", [("image", "text"), ("text", "image")])
def test_a_source_declared_of_the_wrong_kind_is_refused_at_start(data_paths, tmp_path, declared, holds):
    config = support.tiny_config(data_paths)
    config.data.sources = ({"name": "mine", "path": data_paths[holds], "kind": declared},)
    with pytest.raises(pipeline.DataError, match=f"'mine'.*declared kind '{declared}' but holds {holds} shards"):
        trainer.train(config, str(tmp_path))


def _iterator(sources, tok, **kw):
    config = pipeline.default_config()
    config.sources = sources
    config.seq_len, config.batch_size, config.packing_bins, config.num_image_codes = 128, 2, 4, 16
    for k, v in kw.items():
        setattr(config, k, v)
    return pipeline.make_iterator(config, tok, data_support.GEMMA, data_support.TEXT_VOCAB)


def test_a_source_with_too_many_unusable_records_stops_the_run(tmp_path):
    tok = data_support.train_tokenizer(str(tmp_path))
    rng = np.random.default_rng(1)
    good = [records.encode_image_record(r) for r in data_support.image_records(rng, 300, (2, 2), 16, "ok")]
    bad = [b"\x00\xffnot msgpack"] * 100  # 25% unusable
    write_shard(tmp_path / "img" / records.shard_name("img", 0, 1), good + bad)
    source = ({"name": "pairs", "path": str(tmp_path / "img")},)
    it = _iterator(source, tok, max_skip_fraction=0.1)
    with pytest.raises(pipeline.DataError, match=r"'pairs': \d+ of its first \d+ records could not be used.*skipped_corrupt"):
        for _ in range(400):
            next(it)
    it = _iterator(source, tok, max_skip_fraction=0.5)  # within the threshold: counted, not fatal
    for _ in range(60):
        next(it)
    assert it.counters["skipped_corrupt"] > 0
    assert it.counters["source_unusable/pairs"] == it.counters["skipped_corrupt"]


def test_a_long_run_of_unusable_records_stops_instead_of_spinning(tmp_path, monkeypatch):
    tok = data_support.train_tokenizer(str(tmp_path))
    rng = np.random.default_rng(2)
    first = records.encode_image_record(data_support.image_records(rng, 1, (2, 2), 16, "ok")[0])
    out_of_range = [records.encode_image_record(r) for r in data_support.image_records(rng, 400, (2, 2), 64, "x")
                    if r.codes.max() >= 16]
    write_shard(tmp_path / "img" / records.shard_name("img", 0, 1), [first] + out_of_range)
    monkeypatch.setattr(pipeline, "MAX_CONSECUTIVE_SKIPS", 100)
    monkeypatch.setattr(sources, "PROBE_RECORDS", 1)  # the probe sees the one good record
    it = _iterator(({"name": "pairs", "path": str(tmp_path / "img")},), tok, max_skip_fraction=1.0)
    with pytest.raises(pipeline.DataError, match="'pairs': the last 100 records were all unusable.*code_out_of_range"):
        next(it)


def test_pretokenizing_into_a_folder_made_otherwise_is_refused(tmp_path):
    units = picture_folder(str(tmp_path / "pics"))
    codec = ImageCodec(tiny_vqgan())
    out = str(tmp_path / "shards")
    pretokenize_images(units, out, codec, resolution=8)
    stale = tmp_path / "shards" / ".images-00000-of-00001.array_record.tmp-4242"  # left by a kill -9
    stale.write_bytes(b"half a shard")
    pretokenize_images(units, out, codec, resolution=8)  # the same again: resumes, cleans up
    assert not stale.exists()
    # A folder whose manifest names the codebook size as earlier versions did resumes too.
    written = json.loads((tmp_path / "shards" / manifest.MANIFEST_FILE).read_text())
    written["vqgan"]["codebook_size"] = written["vqgan"].pop("num_image_codes")
    (tmp_path / "shards" / manifest.MANIFEST_FILE).write_text(json.dumps(written))
    pretokenize_images(units, out, codec, resolution=8)
    assert manifest.read(out).vqgan.num_image_codes == codec.num_image_codes
    with pytest.raises(UserError, match=r"shards made otherwise.*settings.buckets: \['8x8'\] vs \['16x16'\].*--overwrite"):
        pretokenize_images(units, out, codec, resolution=16)
    with pytest.raises(UserError, match=r"made otherwise \(folder vs this run: vqgan"):
        pretokenize_images(units, out, ImageCodec(tiny_vqgan(seed=3)), resolution=8)
    recaptioned = picture_folder(str(tmp_path / "pics"), captions="another caption {}")
    with pytest.raises(UserError, match=r"made otherwise \(folder vs this run: inputs"):
        pretokenize_images(recaptioned, out, codec, resolution=8)
    report = pretokenize_images(recaptioned, out, codec, resolution=16, overwrite=True)
    assert report["written"] == 12 and manifest.read(out).grids == ((8, 8),)
    assert manifest.read(out).settings["buckets"] == ["16x16"]
    # Text shards: another input file is refused too.
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n')
    pretokenize_text([str(tmp_path / "a.jsonl")], str(tmp_path / "text"))
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    with pytest.raises(UserError, match="inputs"):
        pretokenize_text([str(tmp_path / "a.jsonl")], str(tmp_path / "text"))
    with pytest.raises(UserError, match="kind: 'text' vs 'image'"):
        pretokenize_images(units, str(tmp_path / "text"), codec, resolution=8)


def test_data_counters_are_logged_and_a_damaged_checkpoint_is_passed_by(data_paths, tmp_path, caplog):
    config = support.tiny_config(data_paths)
    config.train.steps, config.checkpoint.every = 4, 2
    workdir = tmp_path / "run"
    trainer.train(config, str(workdir))
    logged = metrics.read_jsonl(workdir / metrics.JSONL_NAME)[-1]
    for key in ("data/skipped_corrupt", "data/examples_t2i", "data/source_records/source1", "data/tokens_image"):
        assert key in logged, key
    assert logged["data/source_records/source0"] > 0 and logged["data/skipped_corrupt"] == 0

    os.remove(workdir / "checkpoints" / "4" / "params" / "manifest.ocdbt")  # the newest step, damaged
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    with caplog.at_level(logging.WARNING):
        step, _, _, _ = model_checkpoint.load_workdir(copy)  # read-only: passes it by, renames nothing
    assert step == 2 and os.path.isdir(copy / "checkpoints" / "4")
    assert "checkpoint step 4" in caplog.text and "damaged" in caplog.text and "falling back to step 2" in caplog.text

    config.train.steps = 6
    result = trainer.train(config, str(workdir))  # resumes from step 2
    assert result.step == 6
    assert os.path.isdir(workdir / "checkpoints" / "4.damaged")
    assert sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())[-1] == 6
