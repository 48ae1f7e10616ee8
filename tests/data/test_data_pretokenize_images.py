"""``pretokenize images`` from a folder + caption table, WebDataset tars and a TFDS data
set built here: codes, captions, grids, broken-image reports, resume, worker split,
and the pipeline reading the result."""

import io
import json
import os
import subprocess
import sys
import tarfile

import grain
import numpy as np
import PIL.Image
import pytest
import skimage.data
from etils import epath
from flax import nnx

from liquid_jax.api import load_vqgan
from liquid_jax.checkpoint.vqgan import save_vqgan
from liquid_jax.data import captioned_images, records
from liquid_jax.data.pretokenize_images import pretokenize_images
from liquid_jax.model.vqgan import VQGAN
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.tokenizer.image import load_image, resize_center_crop

RES = 32  # tiny codec: downsample 4 -> 8x8 grid, 64 codes
TINY = VQGANConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=32, embed_dim=32,
                   num_image_codes=64, resolution=RES)


@pytest.fixture(scope="module")
def vqgan_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("vqgan") / "ckpt")
    save_vqgan(d, VQGAN(TINY, rngs=nnx.Rngs(0), with_decoder=False))
    return d


@pytest.fixture(scope="module")
def codec(vqgan_dir):
    return load_vqgan(vqgan_dir, batch_size=8)


def real_images(n, seed=0):
    """Crops of skimage's sample photographs, square-ish (aspect <= 1.5)."""
    rng = np.random.default_rng(seed)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        h = int(rng.integers(40, 120))
        w = int(h * rng.uniform(0.7, 1.5))
        y, x = int(rng.integers(0, p.shape[0] - h)), int(rng.integers(0, p.shape[1] - w))
        out.append(PIL.Image.fromarray(p[y : y + h, x : x + w]))
    return out


def encode_png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_records(directory, codebook=64):
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(records.SHARD_SUFFIX):
            src = grain.sources.ArrayRecordDataSource([os.path.join(directory, name)])
            for i in range(len(src)):
                r = records.decode_image_record(src[i], codebook)
                out[r.key] = r
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 images: 2 broken (5%), 1 with aspect ratio 3, 1 with an empty caption."""
    d = tmp_path_factory.mktemp("folder")
    (d / "imgs").mkdir()
    rows, captions = [], {}
    for i, img in enumerate(real_images(40)):
        name = f"imgs/{i:03d}." + ("jpg" if i % 2 else "png")
        img.save(d / name)
        captions[name] = f"photo number {i}"
        rows.append({"file": name, "prompt": captions[name]})
    good = (d / rows[5]["file"]).read_bytes()
    (d / rows[5]["file"]).write_bytes(good[: len(good) // 3])  # truncated JPEG
    (d / rows[12]["file"]).write_bytes(b"\x89PNG but not really")  # garbage
    PIL.Image.new("RGB", (96, 32), (200, 10, 10)).save(d / rows[20]["file"])  # aspect 3
    rows[30]["prompt"] = "  "
    with open(d / "meta.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return d, rows


def run_folder(d, out, codec, **kw):
    units = captioned_images.units_for("folder", [str(d)], captions=str(d / "meta.jsonl"), image_field="file",
                                   caption_field="prompt", per_shard=12)
    return pretokenize_images(units, str(out), codec, resolution=RES, batch_size=5, decode_threads=2, **kw)


def test_folder_codes_captions_and_report(folder, codec, tmp_path):
    d, rows = folder
    report = run_folder(d, tmp_path, codec)
    broken = {rows[5]["file"], rows[12]["file"]}
    assert {b["key"] for b in report["broken"]} == broken
    assert [a["key"] for a in report["aspect_filtered"]] == [rows[20]["file"]]
    assert [e["key"] for e in report["empty_caption"]] == [rows[30]["file"]]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert {b["key"] for b in on_disk["broken"]} == broken and on_disk["written"] == 36
    assert report["shards"] == 4  # 40 rows, 12 per shard
    recs = read_records(tmp_path)
    assert len(recs) == 36
    keep = [r for i, r in enumerate(rows) if i not in (5, 12, 20, 30)]
    pixels = np.stack([resize_center_crop(load_image(d / r["file"]), RES) for r in keep])
    want = codec.encode(pixels)
    for r, codes in zip(keep, want):
        rec = recs[r["file"]]
        assert rec.caption == r["prompt"] and (rec.h, rec.w) == (8, 8)
        np.testing.assert_array_equal(rec.codes, codes)


def test_folder_resume_and_workers(folder, codec, tmp_path):
    d, _ = folder
    first = run_folder(d, tmp_path, codec, worker=(0, 2))
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(records.SHARD_SUFFIX))
    assert names == [records.shard_name("images", i, 4) for i in (0, 2)]
    assert first["shards_already_done"] == 0
    run_folder(d, tmp_path, codec, worker=(1, 2))
    mtimes = {f: os.stat(tmp_path / f).st_mtime_ns for f in os.listdir(tmp_path) if f.endswith(records.SHARD_SUFFIX)}
    assert len(mtimes) == 4
    os.remove(tmp_path / records.shard_name("images", 3, 4))  # as if that worker died
    again = run_folder(d, tmp_path, codec)
    assert again["shards_already_done"] == 3 and again["written"] == 36
    for f, t in mtimes.items():
        if f != records.shard_name("images", 3, 4):
            assert os.stat(tmp_path / f).st_mtime_ns == t
    assert len(read_records(tmp_path)) == 36


def test_webdataset_tars(codec, tmp_path):
    imgs = real_images(6, seed=1)
    tar_path = tmp_path / "shard-000.tar"
    with tarfile.open(tar_path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i, img in enumerate(imgs):
            add(f"s{i}.png", encode_png(img))
            if i % 2:
                add(f"s{i}.json", json.dumps({"caption": f"json caption {i}"}).encode())
            else:
                add(f"s{i}.txt", f"text caption {i}\n".encode())
        add("s6.jpg", b"not a jpeg")
        add("s6.txt", b"broken one")
        add("s7.txt", b"caption without image")
    whole = tar_path.read_bytes()
    (tmp_path / "shard-001.tar").write_bytes(whole[: len(whole) // 2])  # cut mid-sample
    units = captioned_images.units_for("webdataset", [str(tmp_path / "*.tar")])
    report = pretokenize_images(units, str(tmp_path / "out"), codec, resolution=RES, batch_size=4)
    broken = {b["key"]: b["reason"] for b in report["broken"]}
    assert set(broken) == {"shard-000.tar/s6", "shard-000.tar/s7", "shard-001.tar"}
    assert "tar read failed" in broken["shard-001.tar"]
    recs = read_records(tmp_path / "out")
    cut = sorted(k for k in recs if k.startswith("shard-001.tar/"))
    assert 0 < len(cut) < 6 and cut == [f"shard-001.tar/s{i}" for i in range(len(cut))]
    recs = {k: v for k, v in recs.items() if k.startswith("shard-000.tar/")}
    assert sorted(recs) == [f"shard-000.tar/s{i}" for i in range(6)]
    assert recs["shard-000.tar/s0"].caption == "text caption 0"
    assert recs["shard-000.tar/s1"].caption == "json caption 1"
    want = codec.encode(np.stack([resize_center_crop(im, RES) for im in imgs]))
    for i in range(6):
        np.testing.assert_array_equal(recs[f"shard-000.tar/s{i}"].codes, want[i])


def _build_tfds(data_dir, images, captions):
    import tensorflow_datasets as tfds

    os.makedirs(data_dir, exist_ok=True)
    class TinyCaptions(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        # Builders outside a package must say where their (absent) metadata lives.
        pkg_dir_path = epath.Path(data_dir)

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(encoding_format="png"), "caption": tfds.features.Text()}
                )
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (img, cap) in enumerate(zip(images, captions)):
                yield i, {"image": encode_png(img), "caption": cap}

    builder = TinyCaptions(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder.name


def test_tfds_dataset(codec, tmp_path):
    imgs = real_images(7, seed=2)
    caps = [f"tfds caption {i}" for i in range(7)]
    name = _build_tfds(tmp_path / "tfds", imgs, caps)
    units = captioned_images.units_for("tfds", [name], tfds_data_dir=str(tmp_path / "tfds"), per_shard=4)
    assert len(units) == 2
    report = pretokenize_images(units, str(tmp_path / "out"), codec, resolution=RES, batch_size=4)
    assert report["written"] == 7 and report["broken"] == []
    recs = read_records(tmp_path / "out")
    want = codec.encode(np.stack([resize_center_crop(im, RES) for im in imgs]))
    assert sorted(recs) == [f"{name}/train/{i}" for i in range(7)]
    assert sorted(r.caption for r in recs.values()) == caps
    for rec in recs.values():  # TFDS stores examples in its own (shuffled) order
        np.testing.assert_array_equal(rec.codes, want[caps.index(rec.caption)])


def test_cli_folder(folder, vqgan_dir, tmp_path):
    d, rows = folder
    proc = subprocess.run(
        [sys.executable, "-m", "liquid_jax.cli", "pretokenize", "images", f"--input={d}",
         f"--captions={d / 'meta.jsonl'}", "--image_field=file", "--caption_field=prompt",
         f"--vqgan={vqgan_dir}", f"--output={tmp_path}", f"--resolution={RES}", "--images_per_shard=25",
         "--num_workers=1", "--worker_index=0"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["written"] == 36 and summary["broken"] == 2 and summary["shards"] == 2
    assert "img/s" in proc.stderr  # tqdm shows the rate


def test_pipeline_reads_pretokenized_images(folder, codec, tmp_path):
    from test_data_pipeline import config, documents, iterator, it_numpy
    from helpers.data_support import TEXT_VOCAB, train_tokenizer

    d, rows = folder
    run_folder(d, tmp_path / "shards", codec)
    by_codes = {tuple(int(c) for c in r.codes): r for r in read_records(tmp_path / "shards").values()}
    tok = train_tokenizer(str(tmp_path))
    c = config([{"path": str(tmp_path / "shards"), "kind": "image"}], seq_len=256, batch_size=1,
               num_epochs=1, t2i_ratio=0.0, num_image_codes=64, packing_bins=4)
    it = iterator(c, tok)
    seen = []
    for batch in it_numpy(it):
        for ids, labels in documents(batch):
            codes = tuple(t - TEXT_VOCAB for t in ids[2:66])
            assert ids[:2] == [2, 7] and ids[66] == 8  # caption mode, an 8x8 grid
            seen.append(by_codes[codes].key)
    assert sorted(seen) == sorted(r.key for r in by_codes.values()) and len(seen) == 36
