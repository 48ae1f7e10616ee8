"""Parity of the Flax VQGAN with taming-transformers and transformers' ChameleonVQVAE."""

import os

import numpy as np
import pytest
import torch

from helpers.vqgan_reference import TamingVQ, real_images, taming_yaml
from liquid_jax.api import load_vqgan
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.tokenizer.image import to_model_input

# Chameleon's structure (5 levels, 2 res blocks, attention only in the middle) at reduced width.
REDUCED = VQGANConfig(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_resolutions=(),
                      z_channels=64, embed_dim=32, num_image_codes=512, resolution=128)
# The same with attention at an intermediate level (16 px when the input is 128 px).
INTERMEDIATE_ATTN = REDUCED.replace(attn_resolutions=(16,), ch_mult=(1, 2, 2, 4), num_res_blocks=1)


def _save_taming(tmp_path, cfg, ref):
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "vqgan.ckpt")
    (tmp_path / "vqgan.yaml").write_text(taming_yaml(cfg))
    return str(tmp_path / "vqgan.ckpt")


@pytest.mark.parametrize("cfg", [REDUCED, INTERMEDIATE_ATTN], ids=["mid_attn", "attn16"])
def test_matches_taming_on_real_images(tmp_path, cfg):
    ref = TamingVQ(cfg, seed=1)
    codec = load_vqgan(_save_taming(tmp_path, cfg, ref), batch_size=2)
    images = real_images(128)
    codes = codec.encode(images)
    ref_codes = ref.encode(to_model_input(images))
    f = cfg.pixels_per_code
    assert codes.shape == (4, (128 // f) ** 2) and codes.dtype == np.int32
    agree = (codes == ref_codes).mean()
    assert agree >= 0.999, f"codes agree on {agree:.4%} of positions"
    assert len(np.unique(ref_codes)) > 10  # the comparison is not between constant maps

    grid = (128 // f, 128 // f)
    ours = codec.model.decode(codes.reshape(4, *grid))
    theirs = ref.decode(ref_codes, grid)
    err = np.abs(np.asarray(ours) - theirs).max()
    assert err < 1e-4, f"decoded pixels differ by {err}"
    # The uint8 path applies upstream's post-processing to the same floats.
    clamped = np.clip(theirs, -1, 1)
    expected = ((torch.from_numpy(clamped) + 1) / 2 * 255).numpy().astype(np.uint8)
    pixels = codec.decode(ref_codes, grid=grid)
    assert (np.abs(pixels.astype(int) - expected.astype(int)) <= 1).all()
    assert (pixels == expected).mean() > 0.999


def test_non_square_images_match_taming(tmp_path):
    cfg = REDUCED
    ref = TamingVQ(cfg, seed=2)
    codec = load_vqgan(_save_taming(tmp_path, cfg, ref))
    images = real_images(128)[:2, :64, :]  # 64 x 128 crops
    codes = codec.encode(images)
    assert codes.shape == (2, 4 * 8)
    np.testing.assert_array_equal(codes, ref.encode(to_model_input(images)))
    decoded = np.asarray(codec.model.decode(codes.reshape(2, 4, 8)))
    np.testing.assert_allclose(decoded, ref.decode(codes, (4, 8)), atol=1e-4)
    assert codec.decode(codes, grid=(4, 8)).shape == (2, 64, 128, 3)


def test_matches_transformers_chameleon_vqvae(tmp_path):
    from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

    hf_cfg = ChameleonVQVAEConfig(
        embed_dim=32, num_embeddings=512, latent_channels=64, resolution=128, base_channels=32,
        channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[32],
    )
    torch.manual_seed(3)
    hf = ChameleonVQVAE(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # post_init zero-fills some tensors; use informative weights
            p.copy_(torch.randn_like(p) * (p.shape[1] * np.prod(p.shape[2:])) ** -0.5 if p.ndim > 1 else torch.randn_like(p) * 0.1)
    images = real_images(128)
    pixels = torch.from_numpy(to_model_input(images)).permute(0, 3, 1, 2)
    with torch.no_grad():  # codebook = perturbed latents, so that many codes are in use
        latents = hf.quant_conv(hf.encoder(pixels)).permute(0, 2, 3, 1).reshape(-1, 32)
        pick = torch.randint(0, latents.shape[0], (512,))
        hf.quantize.embedding.weight.copy_(latents[pick] + 0.1 * latents.std() * torch.randn(512, 32))
    hf.save_pretrained(tmp_path)
    codec = load_vqgan(str(tmp_path))
    assert not codec.has_decoder and codec.num_image_codes == 512 and codec.pixels_per_code == 16
    with torch.no_grad():
        out = hf.encode(pixels)
    ref = out.image_tokens.reshape(4, -1).numpy()
    codes = codec.encode(images)
    assert len(np.unique(ref)) > 50
    assert (codes == ref).mean() >= 0.999
    with pytest.raises(ValueError, match="no decoder"):
        codec.decode(codes)


def test_full_chameleon_checkpoint_encodes_512px_like_taming(tmp_path):
    cfg = VQGANConfig()  # Chameleon: 512 px, 8192 codes of dim 256
    ref = TamingVQ(cfg, seed=4)
    ckpt = _save_taming(tmp_path, cfg, ref)
    assert os.path.getsize(ckpt) > 100e6
    codec = load_vqgan(ckpt, batch_size=1)
    image = real_images(512, names=("astronaut",))
    codes = codec.encode(image)
    assert codes.shape == (1, 1024)
    np.testing.assert_array_equal(codes, ref.encode(to_model_input(image)))
