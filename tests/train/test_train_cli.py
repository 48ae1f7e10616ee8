"""Smoke run of the `liquid-jax train` command on the tiny mixed data."""

import os
import subprocess

from helpers import train_support as support
from liquid_jax.train import metrics


def test_liquid_jax_train_smoke(tmp_path):
    os.makedirs(tmp_path / "data")
    paths = support.write_mixed_data(str(tmp_path / "data"))
    workdir = str(tmp_path / "run")
    run = subprocess.run(
        support.cli_command(
            "train", f"--config={support.TINY_CONFIG}:smoke", f"--workdir={workdir}",
            "--config.train.steps=4", "--config.checkpoint.every=2", *support.overrides(paths),
        ),
        env=support.cli_env(2), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "training finished at step 4" in run.stdout
    assert "train: 100%" in run.stderr and "4/4" in run.stderr  # the tqdm bar
    records = metrics.read_jsonl(os.path.join(workdir, metrics.JSONL_NAME))
    assert [r["step"] for r in records] == list(range(1, 5))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
