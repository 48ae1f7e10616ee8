"""Images at any size and shape: aspect-ratio buckets in pre-tokenization, training on
several grids with the size prefix, and sampling every trained grid."""

import json
import os

import numpy as np
import PIL.Image
import pytest

from helpers import train_support as support
import liquid_jax
from helpers.sample_models import tiny_vqgan
from liquid_jax.checkpoint.vqgan import save_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.data import buckets, captioned_images, pipeline, records
from liquid_jax.data.pretokenize_images import pretokenize_images
from liquid_jax.data.sequences import SequenceBuilder
from liquid_jax.errors import UserError
from liquid_jax.sample.prompts import text_to_image_prompts
from liquid_jax.tokenizer.text import load_text_tokenizer
from liquid_jax.train import export, trainer

# (width, height) of the test images and the (h, w) grid each must get at resolution 16 of a
# VQGAN with 2 pixels per code (8 codes a side): 2:3 -> 7 x 10 codes across x down, and so on.
SHAPES = {"square": ((90, 90), (8, 8)), "portrait": ((60, 90), (10, 7)), "landscape": ((90, 60), (7, 10)),
          "tall": ((54, 96), (11, 6)), "strip": ((30, 90), None)}  # 3:1 is over the 2.0 limit
ASPECTS = "1:1,2:3,3:2,9:16"


def _cover_crop(path, height, width):
    """Resize to cover (LANCZOS, rounded), center crop: written here from PIL alone."""
    img = PIL.Image.open(path).convert("RGB")
    scale = max(width / img.width, height / img.height)
    img = img.resize((round(img.width * scale), round(img.height * scale)), PIL.Image.LANCZOS)
    left, top = (img.width - width) // 2, (img.height - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def _pictures(directory, shapes, copies=1):
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for name, ((w, h), _) in shapes.items():
        for i in range(copies):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            PIL.Image.fromarray(pixels).save(os.path.join(directory, f"{name}{i}.png"))
            rows.append({"image": f"{name}{i}.png", "caption": f"a {name} picture"})
    table = os.path.join(directory, "captions.jsonl")
    with open(table, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return captioned_images.folder_units(directory, table, "image", "caption", per_shard=100)


def test_buckets_keep_each_images_shape(tmp_path):
    codec = ImageCodec(tiny_vqgan())
    units = _pictures(str(tmp_path / "pics"), SHAPES)
    bucket_set = buckets.make_buckets([16], buckets.parse_aspects(ASPECTS), codec.pixels_per_code)
    assert [b.name for b in bucket_set] == ["16x16", "20x14", "14x20", "22x12"]
    report = pretokenize_images(units, str(tmp_path / "out"), codec, buckets=bucket_set)
    assert report["written"] == 4 and [a["key"] for a in report["aspect_filtered"]] == ["strip0.png"]
    assert report["buckets"] == {"16x16": 1, "20x14": 1, "14x20": 1, "22x12": 1}
    shard = os.path.join(tmp_path, "out", records.shard_name("images", 0, 1))
    import grain

    source = grain.sources.ArrayRecordDataSource([shard])
    got = {r.key: r for r in (records.decode_image_record(source[i], 64) for i in range(len(source)))}
    for name, ((_, _), grid) in SHAPES.items():
        if grid is None:
            continue
        record = got[f"{name}0.png"]
        assert (record.h, record.w) == grid, name
        pixels = _cover_crop(tmp_path / "pics" / f"{name}0.png", grid[0] * 2, grid[1] * 2)
        np.testing.assert_array_equal(record.codes, codec.encode(pixels)[0], err_msg=name)


def test_the_nearest_bucket_by_shape_then_pixel_count():
    bucket_set = buckets.make_buckets([256, 512], buckets.parse_aspects("1:1,3:2"), 16)
    assert [b.name for b in bucket_set] == ["256x256", "208x320", "512x512", "416x624"]
    assert buckets.closest(bucket_set, 300, 300).name == "256x256"
    assert buckets.closest(bucket_set, 2000, 1900).name == "512x512"
    assert buckets.closest(bucket_set, 700, 460).name == "416x624"
    with pytest.raises(UserError, match="WIDTH:HEIGHT"):
        buckets.parse_aspects("3x2")
    with pytest.raises(UserError, match="not a positive multiple"):
        buckets.make_buckets([100], ((1, 1),), 16)


def test_a_two_bucket_run_trains_exports_and_samples_both_grids(tmp_path):
    os.makedirs(tmp_path / "data")
    paths = support.write_mixed_data(str(tmp_path / "data"))
    codec = ImageCodec(tiny_vqgan())
    save_vqgan(str(tmp_path / "vqgan"), codec.model)
    two = {k: SHAPES[k] for k in ("square", "landscape")}
    units = _pictures(str(tmp_path / "pics"), two, copies=12)
    bucket_set = buckets.make_buckets([8], buckets.parse_aspects("1:1,3:2"), 2)  # 4x4 and 3x5 codes
    pretokenize_images(units, str(tmp_path / "shards"), codec, buckets=bucket_set)

    config = support.tiny_config(paths)
    config.data.sources = ({"path": paths["text"]}, {"path": str(tmp_path / "shards")})
    config.train.steps, config.checkpoint.every = 2, 2
    trainer.train(config, str(tmp_path / "run"))  # size_prefix None: on, for two grids
    export.export(tmp_path / "run", tmp_path / "model")
    lm = liquid_jax.load(tmp_path / "model", progress=False)
    assert lm.image.size_prefix and set(lm.image.grids) == {(4, 4), (3, 5)} and lm.image.pixels_per_code == 2

    built = pipeline.build_dataset(config.data, load_text_tokenizer(paths["tokenizer"]),
                                   lm.config.special_tokens, lm.config.text_vocab_size)[1]
    training = SequenceBuilder(load_text_tokenizer(paths["tokenizer"]), lm.config.special_tokens,
                               lm.config.text_vocab_size, size_prefix=built.size_prefix,
                               pixels_per_code=built.pixels_per_code)
    for grid in lm.image.grids:
        result = lm.generate_images(["a square picture"], codec, num_images=2, grid=grid, top_k=8, progress=False)
        assert result.images.shape == (2, grid[0] * 2, grid[1] * 2, 3)
        example = training.text_to_image("a square picture", np.zeros(grid[0] * grid[1], np.int32), *grid, 0, False)
        head = example.ids[example.labels == 0].tolist()
        assert text_to_image_prompts(lm.vocab, "a square picture", grid, lm.image.pixels_per_code,
                                     lm.image.size_prefix)[0] == head
        assert lm.vocab.decode(head).startswith(f"Image Size: Width is {grid[1] * 2} Height is {grid[0] * 2}.")
    with pytest.raises(UserError, match="more than the model's context"):
        lm.generate_images(["x"], codec, grid=(30, 30), progress=False)
