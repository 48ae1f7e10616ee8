"""The ``liquid-jax sample`` commands, run as subprocesses on a tiny checkpoint."""

import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from helpers import REPO
from helpers.sample_models import tiny_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sample_cli")
    checkpoint, vqgan = tiny_checkpoints(str(directory))
    return str(directory), checkpoint, vqgan


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-m", "liquid_jax.cli", "sample", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_cli_t2i_writes_pngs_grid_and_codes(checkpoints, tmp_path):
    directory, checkpoint, vqgan = checkpoints
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cat\n\nblue water\n")
    out = tmp_path / "out"
    _cli("t2i", f"--checkpoint={checkpoint}", f"--vqgan={vqgan}", "--prompt=old trees",
         f"--prompts_file={prompts}", "--num_images=2", "--grid=4x4", "--top_k=8", "--dtype=float32",
         f"--out={out}")
    names = sorted(os.listdir(out))
    assert names == ["000_0.png", "000_1.png", "001_0.png", "001_1.png", "002_0.png", "002_1.png",
                     "codes.npy", "grid.png", "sample.json"]
    codes = np.load(out / "codes.npy")
    assert codes.shape == (6, 16)
    assert np.asarray(PIL.Image.open(out / "001_1.png")).shape == (8, 8, 3)


def test_cli_understand_and_text(checkpoints, tmp_path):
    _, checkpoint, vqgan = checkpoints
    image = tmp_path / "x.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(image)
    answer = _cli("understand", f"--checkpoint={checkpoint}", f"--vqgan={vqgan}", f"--image={image}",
                  "--question=what is in this image", "--max_new_tokens=6", "--dtype=float32")
    assert answer.startswith(f"{image}: ")
    caption = _cli("understand", f"--checkpoint={checkpoint}", f"--vqgan={vqgan}", f"--image={image}",
                   f"--image={image}", "--caption", "--max_new_tokens=4", "--dtype=float32")
    assert caption.count(f"{image}: ") == 2
    text = _cli("text", f"--checkpoint={checkpoint}", "--prompt=a red cat", "--max_new_tokens=6",
                "--dtype=float32")
    assert text.startswith("a red cat")


def test_cli_rejects_a_bad_grid(checkpoints, tmp_path):
    _, checkpoint, vqgan = checkpoints
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "liquid_jax.cli", "sample", "t2i", f"--checkpoint={checkpoint}",
         f"--vqgan={vqgan}", "--prompt=x", "--grid=4by4", f"--out={tmp_path}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "--grid must look like 32x32" in done.stderr
