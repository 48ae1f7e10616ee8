"""Errors for people at the ``liquid-jax`` command: one line and exit code 2 for what the
user can fix (the traceback only with --verbose), --help listing a command's flags, a
VQGAN that is not the model's refused before any generation, sample output folders
never mixed, and SIGTERM honoured before the first training step."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, train_support as support
from helpers.sample_models import tiny_checkpoints, tiny_vqgan
from liquid_jax.api import load_vqgan
from liquid_jax.checkpoint.vqgan import save_vqgan
from liquid_jax.convert.hf import convert_hf_to_liquid
from liquid_jax.demo.pipeline import STAGES
from liquid_jax.demo.stages import DONE_FILE, stage_settings
from liquid_jax.model.config import load_config_file


def cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env.pop("LIQUID_JAX_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "liquid_jax.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def last_line(done) -> str:
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny model converted for its VQGAN (the card records the codebook), that VQGAN,
    one with another codebook of the same size and one with twice the codes."""
    root = tmp_path_factory.mktemp("cli_errors")
    _, vqgan = tiny_checkpoints(str(root))
    recorded = str(root / "liquid-for-vqgan")
    convert_hf_to_liquid(str(root / "hf"), recorded, vqgan=load_vqgan(vqgan), progress=False)
    other = str(root / "other-vqgan")
    save_vqgan(other, tiny_vqgan(seed=1))
    bigger = str(root / "bigger-vqgan")
    save_vqgan(bigger, tiny_vqgan(num_image_codes=128))
    return {"model": recorded, "vqgan": vqgan, "other": other, "bigger": bigger}


def test_help_lists_the_commands_flags():
    done = cli("sample", "t2i", "--help")
    assert done.returncode == 0
    for flag in ("--checkpoint", "--vqgan", "--guidance_scale", "--cfg", "--grid", "--out", "--overwrite", "--verbose"):
        assert f"  {flag}:" in done.stdout, flag
    done = cli("train", "--help")
    assert done.returncode == 0 and "  --workdir:" in done.stdout and "--config.<key>" in done.stdout
    assert "Try --helpfull" not in done.stdout + done.stderr


def test_user_errors_are_one_line_with_exit_code_2(models, tmp_path):
    model, vqgan = models["model"], models["vqgan"]
    made = tmp_path / "made" / "world"  # a demo workdir whose world stage ran with seed 1
    made.mkdir(parents=True)
    settings = stage_settings(STAGES, load_config_file(os.path.join(REPO, "configs", "demo.py")))["world"]
    (made / DONE_FILE).write_text(json.dumps({"stage": "world", "seconds": 1.0, "outputs": {},
                                              "settings": {**settings, "seed": 1}}))
    t2i = ("sample", "t2i", f"--checkpoint={model}", f"--vqgan={vqgan}", "--prompt=a cat", "--dtype=float32",
           f"--out={tmp_path / 'out'}")
    cases = [
        (("sample", "text", "--checkpoint=nowhere/", "--prompt=x"), "nowhere/ is neither a liquid_jax checkpoint"),
        ((*t2i, "--top_p=1.5"), "top_p must be in (0, 1], got 1.5"),
        ((*t2i, "--temperature=inf"), "temperature must be a finite number > 0"),
        ((*t2i, "--cfg=nan"), "guidance_scale must be a finite number >= 0"),  # --cfg: its former name
        ((*t2i, "--num_images=0"), "num_images must be >= 1"),
        ((*t2i, "--top_k=many"), "flag --top_k=many"),
        ((*t2i, "--grid=4by4"), "--grid must look like 32x32"),
        ((*t2i, f"--draft_library={tmp_path}"), "a draft library drafts for speculative decoding"),
        ((*t2i, "--speculative_window=4", "--draft_library=nowhere/"), "data source 'nowhere/' does not exist"),
        (("sample", "t2i", f"--vqgan={vqgan}", "--prompt=x", "--out=o"), "--checkpoint is required"),
        (("sample", "text", f"--checkpoint={model}", "--prompt=x", "stray"), "unexpected arguments ['stray']"),
        (("export", "--workdir=nowhere", "--output=x"), "nowhere is not a training workdir"),
        (("train", f"--config={support.TINY_CONFIG}:smoke", "--workdir=w", "--config.data.batch_size=0"),
         "config.data.batch_size 0 is invalid"),
        (("train", f"--config={support.TINY_CONFIG}:smoke", "--workdir=w", "--config.train.stepz=3"),
         "unknown config key 'train.stepz'"),
        (("demo", "--workdir=d", "--config.liquid.stepz=3"), "unknown config key 'liquid.stepz'"),
        (("demo", "--workdir=d", "--config.liquid.data.batch_size=0"), "config.liquid.data.batch_size 0 is invalid"),
        # A key of the earlier run schema reaches the trainer config it now names.
        (("demo", "--workdir=d", "--config.liquid.steps=0"), "config.liquid.train.steps 0 is invalid"),
        (("demo", "--workdir=d", "--config.liquid_mix.image_weight=-1"), "config.liquid_mix.image_weight -1.0 is"),
        (("demo", "--workdir=d", "--config.world.canvases=((64, 48),)"), "canvas (64, 48) must be"),
        (("demo", "--workdir=made"), "stage 'world' ran with another config (seed was 1 then, 0 now); use a new"),
        (("demo", "--workdir=made", "--stage=report", "--rerun_changed"), "leave out --rerun_changed"),
    ]
    for args, message in cases:
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, args
        line = last_line(done)
        assert line.startswith(f"liquid-jax {args[0]}") and message in line, (args, line)
    assert not (tmp_path / "out").exists()  # nothing was generated or written
    assert os.listdir(tmp_path / "made") == ["world"]  # the demo did not start


def test_verbose_shows_the_traceback(tmp_path):
    done = cli("sample", "text", "--checkpoint=nowhere/", "--prompt=x", "--verbose", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_a_vqgan_that_is_not_the_models_is_refused_before_generating(models, tmp_path):
    for vqgan, message in ((models["bigger"], "its codebook has 128 codes, the model 64"),
                           (models["other"], "its codebook fingerprint is")):
        start = time.perf_counter()
        done = cli("sample", "t2i", f"--checkpoint={models['model']}", f"--vqgan={vqgan}", "--prompt=x",
                   f"--out={tmp_path / 'out'}", cwd=tmp_path)
        assert done.returncode == 2 and message in last_line(done), done.stderr[-2000:]
        assert "image tokens" not in done.stderr  # no generation bar was started
        assert not (tmp_path / "out").exists(), time.perf_counter() - start


def test_sample_output_folders_are_never_mixed(models, tmp_path):
    args = ("sample", "t2i", f"--checkpoint={models['model']}", f"--vqgan={models['vqgan']}", "--grid=4x4",
            "--num_images=1", "--top_k=8", "--dtype=float32", "--out=out")
    assert cli(*args, "--prompt=a red cat", "--prompt=blue water", cwd=tmp_path).returncode == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["000_0.png", "001_0.png", "codes.npy", "grid.png", "sample.json"]
    again = cli(*args, "--prompt=old trees", cwd=tmp_path)
    assert again.returncode == 2 and "--out out already exists" in last_line(again)
    replaced = cli(*args, "--prompt=old trees", "--overwrite", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "out")) == ["000_0.png", "codes.npy", "grid.png", "sample.json"]
    assert np.load(tmp_path / "out" / "codes.npy").shape == (1, 16)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = cli(*args[:-1], "--out=mine", "--prompt=x", "--overwrite", cwd=tmp_path)
    assert refused.returncode == 2 and "was not written by sample t2i" in last_line(refused)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_sigterm_before_the_first_step_stops_training_at_once(tmp_path):
    paths = support.write_mixed_data(str(tmp_path))
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "liquid_jax.cli", "train", f"--config={support.TINY_CONFIG}:smoke",
         f"--workdir={workdir}", *support.overrides(paths)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (workdir / "tokenizer").exists() and time.time() < deadline:  # data checked, state not built
        time.sleep(0.05)
    assert proc.poll() is None
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.perf_counter() - sent < 30
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "SIGTERM before the first step finished" in err.strip().splitlines()[-1]
    checkpoints = workdir / "checkpoints"  # may not exist yet when the signal came early
    assert not checkpoints.exists() or not [d for d in os.listdir(checkpoints) if d.isdigit()]
