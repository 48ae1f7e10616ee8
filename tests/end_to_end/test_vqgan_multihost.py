"""Two localhost processes train the smoke VQGAN together through `liquid-jax train-vqgan`:
process 0 alone writes the metrics, the workdir is given as a ``file://`` URL, SIGTERM to
both processes saves a checkpoint and stops them, and a re-run continues with exactly the
losses of an uninterrupted run."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from helpers import REPO, train_support as support
from liquid_jax.checkpoint import train_state
from liquid_jax.checkpoint.directory import load_params
from liquid_jax.checkpoint.vqgan import WORKDIR_MODEL
from liquid_jax.train import metrics

pytestmark = pytest.mark.slow  # three two-process runs: ~2-4 min on 2 busy cores

CONFIG = os.path.join(support.REPO, "configs", "vqgan_tiny.py")
STEPS = 24  # long enough that SIGTERM, sent once step 1 is logged, lands mid-run


def start(workdir, cwd):
    """Both processes of a run; checkpoints only at the end (or on SIGTERM)."""
    port = support.free_port()
    env = support.cli_env(1)
    # The three runs compile the same programs: compile them once.
    env.update(JAX_COMPILATION_CACHE_DIR=str(cwd / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return [
        subprocess.Popen(
            support.cli_command(
                "train-vqgan", f"--config={CONFIG}:smoke", f"--workdir=file://{workdir}",
                f"--config.steps={STEPS}", "--config.log_every=1", f"--config.eval_every={STEPS}",
                f"--config.checkpoint_every={STEPS}", f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2", f"--process_id={i}",
            ),
            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]


def finish(procs):
    """Each process's printed result, once both exited cleanly."""
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def records(workdir):
    """Every metrics row but the timings."""
    rows = metrics.read_jsonl(workdir / metrics.JSONL_NAME) if (workdir / metrics.JSONL_NAME).exists() else []
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in rows]


def logged_steps(workdir):
    return [r["step"] for r in records(workdir) if "loss" in r]


def saved_steps(workdir):
    return sorted(int(d) for d in os.listdir(workdir / train_state.CHECKPOINT_DIR) if d.isdigit())


def test_two_processes_log_once_stop_on_sigterm_and_resume_exactly(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    finished = finish(start(reference, tmp_path))
    assert finished[0] == finished[1] and "eval_psnr" in finished[0]
    assert logged_steps(reference) == list(range(1, STEPS + 1))  # one writer: no row twice
    assert len(os.listdir(reference / metrics.TENSORBOARD_DIR)) == 1
    assert saved_steps(reference) == [STEPS]
    assert not os.path.exists(tmp_path / "file:")  # the URL was not taken for a relative path

    procs = start(interrupted, tmp_path)
    deadline = time.time() + 300
    jsonl = interrupted / metrics.JSONL_NAME
    while time.time() < deadline and not (jsonl.exists() and '"loss"' in jsonl.read_text()):
        time.sleep(0.02)  # until step 1 is logged: the run is under way
    for p in procs:
        p.send_signal(signal.SIGTERM)
    stopped = finish(procs)
    assert stopped[0] == stopped[1] and 0 < stopped[0]["preempted_at_step"] < STEPS, stopped
    cut = stopped[0]["preempted_at_step"]
    assert saved_steps(interrupted) == [cut]
    assert logged_steps(interrupted) == list(range(1, cut + 1))
    assert not (interrupted / WORKDIR_MODEL).exists()

    finish(start(interrupted, tmp_path))
    assert records(interrupted) == records(reference)
    jax.tree.map(np.testing.assert_array_equal, load_params(interrupted / WORKDIR_MODEL)[0],
                 load_params(reference / WORKDIR_MODEL)[0])
