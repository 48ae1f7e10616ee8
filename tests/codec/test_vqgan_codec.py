"""ImageCodec and checkpoint conversion: formats, errors, sharding, bf16."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers.vqgan_reference import TamingVQ, real_images, taming_yaml
from liquid_jax import cli
from liquid_jax.api import load_vqgan
from liquid_jax.checkpoint.card import METADATA_FILE
from liquid_jax.checkpoint.vqgan import save_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.convert.vqgan import ConversionError
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer.image import to_model_input

TINY = VQGANConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), z_channels=16,
                   embed_dim=8, num_image_codes=64, resolution=64)


@pytest.fixture(scope="module")
def taming_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("taming")
    ref = TamingVQ(TINY, seed=5)
    sd = ref.state_dict()
    # Training-only tensors in Chameleon's checkpoint are ignored by the converter.
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    torch.save({"state_dict": sd, "global_step": 7}, root / "vqgan.ckpt")
    (root / "vqgan.yaml").write_text(taming_yaml(TINY))
    return root, ref


@pytest.fixture(scope="module")
def images():
    return real_images(64)


def test_ckpt_converted_by_cli_matches_taming(taming_files, images, tmp_path):
    root, ref = taming_files
    out = tmp_path / "converted"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["liquid-jax", "convert", "vqgan", f"--input={root / 'vqgan.ckpt'}", f"--output={out}"])
    assert not exit_info.value.code
    codec = load_vqgan(str(out))
    assert codec.num_image_codes == 64 and codec.pixels_per_code == 4 and codec.has_decoder
    ref_codes = ref.encode(to_model_input(images))
    np.testing.assert_array_equal(codec.encode(images), ref_codes)
    decoded = np.asarray(codec.model.decode(ref_codes.reshape(4, 16, 16)))
    np.testing.assert_allclose(decoded, ref.decode(ref_codes, (16, 16)), atol=1e-4)


def test_a_card_naming_the_codebook_n_embed_still_loads(taming_files, tmp_path):
    root, _ = taming_files
    codec = load_vqgan(str(root / "vqgan.ckpt"))
    out = tmp_path / "ours"
    save_vqgan(str(out), codec.model)
    card = json.loads((out / METADATA_FILE).read_text())
    card["config"]["n_embed"] = card["config"].pop("num_image_codes")  # as cards were written before
    (out / METADATA_FILE).write_text(json.dumps(card))
    old = load_vqgan(str(out))
    assert old.config == codec.config and old.num_image_codes == 64
    assert old.fingerprint == codec.fingerprint


def test_safetensors_with_taming_keys(taming_files, images, tmp_path):
    root, ref = taming_files
    path = tmp_path / "vqgan.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    codec = load_vqgan(str(path), yaml_path=str(root / "vqgan.yaml"))
    np.testing.assert_array_equal(codec.encode(images), ref.encode(to_model_input(images)))


def test_conversion_errors_name_file_and_tensor(taming_files, tmp_path):
    root, ref = taming_files
    sd = ref.state_dict()
    del sd["encoder.mid.attn_1.q.weight"]
    torch.save({"state_dict": sd}, tmp_path / "missing.ckpt")
    with pytest.raises(ConversionError, match=r"missing.ckpt: missing tensor 'encoder.mid.attn_1.q.weight'"):
        load_vqgan(str(tmp_path / "missing.ckpt"), yaml_path=str(root / "vqgan.yaml"))

    sd = ref.state_dict()
    sd["quantize.embedding.weight"] = torch.zeros(65, 8)
    torch.save({"state_dict": sd}, tmp_path / "shape.ckpt")
    with pytest.raises(ConversionError, match=r"'quantize.embedding.weight' has shape \(65, 8\)"):
        load_vqgan(str(tmp_path / "shape.ckpt"), yaml_path=str(root / "vqgan.yaml"))

    (tmp_path / "corrupt.ckpt").write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(ConversionError, match="corrupt.ckpt"):
        load_vqgan(str(tmp_path / "corrupt.ckpt"), yaml_path=str(root / "vqgan.yaml"))

    (tmp_path / "lonely.ckpt").write_bytes(b"")
    with pytest.raises(ConversionError, match="no architecture yaml"):
        load_vqgan(str(tmp_path / "lonely.ckpt"))


def test_bad_codec_inputs_are_reported(taming_files, images):
    codec = load_vqgan(str(taming_files[0]))  # a directory holding vqgan.ckpt + vqgan.yaml
    codes = codec.encode(images[:1])
    with pytest.raises(ValueError, match=r"codes outside \[0, 64\); first at index \(0, 3\): 64"):
        codec.decode(np.where(np.arange(256) == 3, 64, codes[0])[None])
    with pytest.raises(ValueError, match="outside"):
        codec.decode(-codes - 1)
    with pytest.raises(ValueError, match="pass grid"):
        codec.decode(codes[:, :255])
    with pytest.raises(ValueError, match="not a multiple of the 4 pixels per code"):
        codec.encode(images[:, :62])
    with pytest.raises(TypeError, match="uint8"):
        codec.encode(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        codec.encode(images[..., :1])


def test_non_square_grid_roundtrip_shapes(taming_files, images):
    codec = load_vqgan(str(taming_files[0]), batch_size=3)
    wide = images[:, :32, :]  # 32 x 64 pixels -> 8 x 16 codes
    codes = codec.encode(wide)
    assert codes.shape == (4, 128)
    assert codec.decode(codes, grid=(8, 16)).shape == (4, 32, 64, 3)
    assert codec.decode(codes.reshape(4, 8, 16)).shape == (4, 32, 64, 3)
    # Batching in chunks of 3 (last chunk padded) equals one image at a time.
    single = np.concatenate([codec.encode(wide[i:i + 1]) for i in range(4)])
    np.testing.assert_array_equal(codes, single)


def test_sharded_over_data_axis_and_bf16(taming_files, images):
    model = load_vqgan(str(taming_files[0])).model
    plain = ImageCodec(model, batch_size=4)
    five = np.concatenate([images, images[:1]])
    codes = plain.encode(five)
    pixels = plain.decode(codes)
    mesh = make_mesh((8, 1, 1))
    sharded = ImageCodec(model, batch_size=4, mesh=mesh)
    assert sharded.batch_size == 8
    np.testing.assert_array_equal(sharded.encode(five), codes)
    np.testing.assert_array_equal(sharded.decode(codes), pixels)

    bf16 = ImageCodec(model, dtype="bfloat16")
    assert (bf16.encode(five) == codes).mean() > 0.8
    diff = np.abs(bf16.decode(codes).astype(int) - pixels.astype(int))
    assert diff.mean() < 3.0
