"""VQGAN training: losses against independent references, and the train-vqgan entry point."""

import json
import os

import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import torch
from flax import nnx

from helpers import REPO
from liquid_jax import cli
from liquid_jax.api import load_vqgan
from liquid_jax.checkpoint import train_state
from liquid_jax.model.config import load_config_file
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.train.vqgan import codebook, losses
from liquid_jax.train.vqgan.data import shape_images
from liquid_jax.train.vqgan.patchgan import PatchGAN
from liquid_jax.train.vqgan.perceptual import VGG16_STAGES, load_vgg16_weights, perceptual_distance
from liquid_jax.train.vqgan.trainer import train

CONFIG = os.path.join(REPO, "configs", "vqgan_tiny.py")


def test_quantization_losses_match_taming_vector_quantizer():
    from taming.modules.vqvae.quantize import VectorQuantizer

    torch.manual_seed(0)
    vq = VectorQuantizer(32, 8, beta=0.25)
    z = torch.randn(2, 8, 4, 4) * 0.05
    with torch.no_grad():
        zq, loss, (perp, _, idx) = vq(z)
    z_nhwc = jnp.asarray(z.permute(0, 2, 3, 1).numpy())
    e = vq.embedding.weight.detach().numpy()
    zq_ours = jnp.asarray(e[idx.numpy().reshape(-1)]).reshape(z_nhwc.shape)
    codebook, commit = losses.quantization_losses(z_nhwc, zq_ours)
    np.testing.assert_allclose(float(codebook + 0.25 * commit), loss.item(), rtol=1e-5)
    counts = losses.code_histogram(jnp.asarray(idx.numpy()), 32)
    np.testing.assert_allclose(float(losses.perplexity(counts)), float(perp), rtol=1e-4)


def test_psnr_matches_skimage():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), -1, 1).astype(np.float32)
    ours = np.asarray(losses.psnr(jnp.asarray(a), jnp.asarray(b)))
    for i in range(2):
        ref = peak_signal_noise_ratio((a[i] + 1) / 2, (b[i] + 1) / 2, data_range=1.0)
        np.testing.assert_allclose(ours[i], ref, rtol=1e-4)


def test_patchgan_output_grid_matches_taming_discriminator():
    from taming.modules.discriminator.model import NLayerDiscriminator

    cfg = VQGANConfig(ch=32, ch_mult=(1, 2), resolution=64)
    disc = PatchGAN(cfg, ndf=32, n_layers=3, rngs=nnx.Rngs(0))
    ref = NLayerDiscriminator(input_nc=3, ndf=32, n_layers=3).eval()
    out = disc(jnp.zeros((2, 64, 64, 3)))
    with torch.no_grad():
        ref_out = ref(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, ref_out.shape[2], ref_out.shape[3], 1)


def test_perceptual_distance_matches_a_torch_computation(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors, c_in = {}, 3
    widths = (8, 16, 16, 16, 16)
    for stage, width in zip(VGG16_STAGES, widths):
        for i in stage:
            tensors[f"features.{i}.weight"] = torch.randn(width, c_in, 3, 3) * (2 / (9 * c_in)) ** 0.5
            tensors[f"features.{i}.bias"] = torch.randn(width) * 0.1
            c_in = width
    for k, width in enumerate(widths):
        tensors[f"lin{k}.model.1.weight"] = torch.rand(1, width, 1, 1)
    save_file(tensors, str(tmp_path / "vgg.safetensors"))
    weights = {k: jnp.asarray(v) for k, v in load_vgg16_weights(str(tmp_path / "vgg.safetensors")).items()}

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.2, x.shape), -1, 1).astype(np.float32)
    ours = np.asarray(perceptual_distance(weights, jnp.asarray(x), jnp.asarray(y)))

    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(img):
        h = (torch.from_numpy(img).permute(0, 3, 1, 2) - shift) / scale
        out = []
        for s, stage in enumerate(VGG16_STAGES):
            if s:
                h = torch.nn.functional.max_pool2d(h, 2)
            for i in stage:
                h = torch.relu(torch.nn.functional.conv2d(h, tensors[f"features.{i}.weight"],
                                                          tensors[f"features.{i}.bias"], padding=1))
            out.append(h)
        return out

    ref = 0
    for k, (fx, fy) in enumerate(zip(feats(x), feats(y))):
        nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        ref = ref + ((nx - ny) ** 2 * tensors[f"lin{k}.model.1.weight"]).sum(1).mean((1, 2))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4)
    assert float(perceptual_distance(weights, jnp.asarray(x), jnp.asarray(x)).max()) == 0.0


def test_ema_codebook_update_matches_numpy():
    rng = np.random.default_rng(2)
    n, d, decay, eps = 6, 3, 0.9, 1e-5
    count, total = rng.uniform(0, 2, n).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    z = rng.normal(size=(4, 5, d)).astype(np.float32)
    codes = rng.integers(0, n - 1, (4, 5))  # code n-1 unused: it keeps its old sum, shrinks
    new_count, new_total, emb = codebook.ema_update(jnp.asarray(count), jnp.asarray(total), jnp.asarray(z),
                                                    jnp.asarray(codes), decay, eps)
    onehot = np.eye(n)[codes.reshape(-1)]
    exp_count = decay * count + (1 - decay) * onehot.sum(0)
    exp_total = decay * total + (1 - decay) * onehot.T @ z.reshape(-1, d)
    smoothed = (exp_count + eps) / (exp_count.sum() + n * eps) * exp_count.sum()
    np.testing.assert_allclose(new_count, exp_count, rtol=1e-5)
    np.testing.assert_allclose(new_total, exp_total, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb, exp_total / smoothed[:, None], rtol=1e-4)


def test_dead_codes_are_restarted_from_latents_and_live_ones_kept():
    import jax

    emb = jnp.zeros((8, 2))
    usage = jnp.array([0.5, 0.0, 0.2, 0.0, 0.3, 0.0, 0.0, 0.0])
    z = jnp.asarray(np.random.default_rng(0).normal(10.0, 1.0, (3, 4, 2)))
    new, dead = codebook.restart_dead(emb, usage, z, 0.01, jax.random.key(0))
    np.testing.assert_array_equal(dead, usage < 0.01)
    np.testing.assert_array_equal(new[~dead], 0.0)
    assert float(jnp.abs(new[dead] - 10.0).max()) < 5.0  # drawn from the latents (mean 10)


def test_dead_codes_are_restarted_where_the_codebook_fits_worst():
    import jax

    # 95% of the latents sit on the one live code (a flat background); 5% are far away.
    rng = np.random.default_rng(1)
    near = rng.normal(0.0, 0.01, (950, 2))
    far = rng.normal(0.0, 1.0, (50, 2)) + np.array([6.0, 0.0])
    z = jnp.asarray(np.concatenate([near, far]), jnp.float32)
    emb = jnp.zeros((64, 2))
    usage = jnp.zeros((64,)).at[0].set(1.0)
    new, dead = codebook.restart_dead(emb, usage, z, 0.01, jax.random.key(0))
    assert int(dead.sum()) == 63
    from_far = np.asarray(new[1:, 0]) > 3.0
    # Uniform restarts would take about 5% from the far cluster.
    assert from_far.mean() > 0.95


def test_shape_images_are_deterministic_and_varied():
    a, b = shape_images(6, 32, seed=3), shape_images(6, 32, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert len({img.tobytes() for img in a}) == 6


def _run(workdir):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["liquid-jax", "train-vqgan", f"--config={CONFIG}:smoke", f"--workdir={workdir}"])
    assert not exit_info.value.code


def test_smoke_training_writes_metrics_images_checkpoints_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    _run(workdir)
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train_records = [r for r in records if "psnr" in r]
    evals = [r for r in records if "eval_psnr" in r]
    assert [r["step"] for r in train_records] == [2, 4] and [r["step"] for r in evals] == [2, 4]
    for key in ("rec", "codebook", "commit", "g_adv", "d_loss", "perplexity", "images_per_second"):
        assert np.isfinite(train_records[-1][key]), key
    assert 0 < evals[-1]["eval_codes_used"] <= 1 and evals[-1]["eval_perplexity"] >= 1
    assert any("restarted_codes" in r for r in records)
    grid = PIL.Image.open(workdir / "reconstructions_0000004.png")
    assert grid.size == (8 * 16, 2 * 16)
    assert os.listdir(workdir / "tensorboard")

    codec = load_vqgan(str(workdir / "vqgan"))
    assert codec.num_image_codes == 32 and codec.pixels_per_code == 2
    codes = codec.encode(shape_images(2, 16, seed=9))
    assert codes.shape == (2, 64) and codec.decode(codes).shape == (2, 16, 16, 3)

    # Resuming continues from the last checkpoint (step 4), it does not start over.
    config = load_config_file(CONFIG, "smoke")
    config.steps = 6
    train(config, str(workdir))
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert steps[len(records):] and min(steps[len(records):]) > 4 and max(steps) == 6


def test_a_run_whose_checkpoint_names_the_codebook_n_embed_resumes(tmp_path):
    checkpointer = train_state.TrainCheckpointer(tmp_path, use_async=False)
    earlier = {"model": {"ch": 16, "n_embed": 32}}  # a train-vqgan run config of an earlier version
    checkpointer.save(1, {"params": {"w": np.zeros(2, np.float32)}}, None, earlier, force=True)
    checkpointer.check_model(1, {"ch": 16, "num_image_codes": 32})
    with pytest.raises(train_state.IncompatibleCheckpointError, match="num_image_codes: 32 .* vs 64"):
        checkpointer.check_model(1, {"ch": 16, "num_image_codes": 64})
    checkpointer.close()


@pytest.mark.slow
def test_tiny_preset_learns_shapes(tmp_path):
    """The acceptance run: configs/vqgan_tiny.py on 512 renders of the shapes world."""
    final = train(vqgan_trainer_config(""), str(tmp_path / "tiny"))
    assert final["eval_psnr"] >= 25.0, final
    assert final["eval_codes_used"] >= 0.5, final
