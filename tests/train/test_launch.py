"""Dry runs of the launch scripts print the commands they would run."""

import os
import shlex
import subprocess

import pytest

from helpers import REPO, train_support as support
from liquid_jax.train import config as config_lib

LAUNCH = os.path.join(support.REPO, "launch")


def dry_run(script, *args, env=None):
    run = subprocess.run(
        ["bash", os.path.join(LAUNCH, script), "--dry-run", *args],
        capture_output=True, text=True, timeout=60, cwd=support.REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | (env or {}),
    )
    return run


def train_argv(command: str) -> list[str]:
    """The `liquid-jax train ...` words of a shell command string."""
    words = shlex.split(command.split("&&")[-1].split("2>&1")[0])
    start = words.index("liquid-jax")
    return words[start:]


@pytest.mark.parametrize("script", ["tpu_pod.sh", "gpu_slurm.sh"])
def test_scripts_are_valid_bash(script):
    assert subprocess.run(["bash", "-n", os.path.join(LAUNCH, script)]).returncode == 0


def test_tpu_pod_dry_run_queued():
    run = dry_run(
        "tpu_pod.sh", "--name", "liquid-7b", "--zone", "us-east5-a", "--accelerator", "v5p-128",
        "--config", "configs/gemma_7b_liquid.py", "--bucket", "gs://my-bucket/", "--queued", "--spot",
        "--", "--config.train.steps=100",
    )
    assert run.returncode == 0, run.stderr
    lines = [shlex.split(line) for line in run.stdout.splitlines() if not line.startswith("#")]
    create = lines[0]
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert create[create.index("--accelerator-type") + 1] == "v5p-128"
    assert "--spot" in create and create[create.index("--node-id") + 1] == "liquid-7b"
    ssh = [w for w in lines if "ssh" in w]
    assert len(ssh) == 2 and all("--worker=all" in w for w in ssh)
    assert "pip install -e 'liquid_jax[tpu]'" in ssh[0][-1]
    argv = train_argv(ssh[1][-1])
    assert argv[:2] == ["liquid-jax", "train"]
    assert argv[argv.index("--workdir") + 1] == "gs://my-bucket/gemma_7b_liquid"
    assert "--distributed=on" in argv and "--config.train.steps=100" in argv
    config_lib.check_overrides(argv)  # every --config.* key exists in the named config


def test_tpu_pod_dry_run_direct_create_and_bad_bucket():
    run = dry_run(
        "tpu_pod.sh", "--name", "n", "--zone", "z", "--accelerator", "v5litepod-256",
        "--config", "configs/gemma_7b_liquid.py", "--bucket", "gs://b",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("gcloud compute tpus tpu-vm create n --zone z --accelerator-type v5litepod-256")
    bad = dry_run(
        "tpu_pod.sh", "--name", "n", "--zone", "z", "--accelerator", "v5p-8",
        "--config", "c.py", "--bucket", "/local/dir",
    )
    assert bad.returncode == 2 and "gs://" in bad.stderr


def test_gpu_slurm_dry_run_takes_coordinator_from_slurm():
    run = dry_run(
        "gpu_slurm.sh", "--nodes", "4", "--config", "configs/gemma2_9b_liquid.py",
        "--workdir", "/shared/runs/x", "--", "--config.optimizer.learning_rate=1e-5",
    )
    assert run.returncode == 0, run.stderr
    words = shlex.split(run.stdout)
    assert words[:3] == ["srun", "--nodes", "4"] and "--ntasks-per-node" in words
    inner = words[-1]
    assert "scontrol show hostnames" in inner and "$SLURM_PROCID" in inner and "$SLURM_NTASKS" in inner
    assert "--distributed=on" in inner
    argv = shlex.split(inner.replace("$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)", "node0"))
    config_lib.check_overrides(argv)
    assert argv[argv.index("--config") + 1] == "configs/gemma2_9b_liquid.py"


def test_gpu_slurm_inside_allocation_uses_first_node(tmp_path):
    # A fake `scontrol` stands in for SLURM's, printing the allocation's hosts.
    fake = tmp_path / "scontrol"
    fake.write_text("#!/bin/sh\nprintf 'gpu-017\\ngpu-018\\n'\n")
    fake.chmod(0o755)
    run = dry_run(
        "gpu_slurm.sh", "--config", "configs/tiny_liquid.py", "--workdir", "/w",
        env={"SLURM_JOB_NODELIST": "gpu-[017-018]", "SLURM_JOB_NUM_NODES": "2",
             "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )
    assert run.returncode == 0, run.stderr
    assert "--coordinator_address=gpu-017:12355" in shlex.split(run.stdout)[-1]
    assert shlex.split(run.stdout)[2] == "2"


def test_gpu_slurm_outside_slurm_needs_nodes():
    run = dry_run("gpu_slurm.sh", "--config", "c.py", "--workdir", "/w")
    assert run.returncode == 2 and "--nodes" in run.stderr
