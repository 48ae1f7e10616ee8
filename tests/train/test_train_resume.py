"""Resume exactness after kill -9 and after SIGTERM, through the `liquid-jax train` CLI."""

import os
import signal
import subprocess
import time

import pytest

from helpers import train_support as support
from liquid_jax.checkpoint import train_state
from liquid_jax.train import metrics

pytestmark = pytest.mark.slow  # three to four CLI runs of ~40 s each

STEPS = 40
EVERY = 4


@pytest.fixture(scope="module")
def data_paths(tmp_path_factory):
    return support.write_mixed_data(str(tmp_path_factory.mktemp("data")))


def command(paths, workdir):
    return support.cli_command(
        "train", f"--config={support.TINY_CONFIG}:smoke", f"--workdir={workdir}",
        f"--config.train.steps={STEPS}", f"--config.checkpoint.every={EVERY}",
        "--config.checkpoint.keep=3", *support.overrides(paths),
    )


def losses(workdir):
    # A killed run may log a step twice (once before the kill, again after resuming);
    # the resumed value is the later one.
    return {r["step"]: r["loss"] for r in metrics.read_jsonl(os.path.join(workdir, metrics.JSONL_NAME))}


def start(paths, workdir):
    return subprocess.Popen(
        command(paths, workdir), env=support.cli_env(2),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def reference(data_paths, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    finish(start(data_paths, workdir))
    return losses(workdir)


def committed_steps(workdir):
    directory = os.path.join(workdir, train_state.CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def test_kill_9_between_checkpoints_then_resume_matches(data_paths, reference, tmp_path):
    assert sorted(reference) == list(range(1, STEPS + 1))
    workdir = str(tmp_path)
    proc = start(data_paths, workdir)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once a checkpoint exists and training went past it
        steps = committed_steps(workdir)
        logged = losses(workdir) if os.path.exists(os.path.join(workdir, metrics.JSONL_NAME)) else {}
        if steps and logged and max(logged) > steps[-1] and max(logged) % EVERY:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    restored = committed_steps(workdir)[-1]
    assert restored < STEPS

    finish(start(data_paths, workdir))
    resumed = losses(workdir)
    for step in range(restored + 1, STEPS + 1):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])


def test_sigterm_saves_and_resume_matches(data_paths, reference, tmp_path):
    workdir = str(tmp_path)
    proc = start(data_paths, workdir)
    deadline = time.time() + 600
    while time.time() < deadline:
        path = os.path.join(workdir, metrics.JSONL_NAME)
        if os.path.exists(path) and losses(workdir) and max(losses(workdir)) >= 6:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    saved = committed_steps(workdir)[-1]
    assert saved == max(losses(workdir)) and saved < STEPS  # the step it stopped at was saved

    finish(start(data_paths, workdir))
    resumed = losses(workdir)
    for step in range(1, STEPS + 1):
        assert resumed[step] == reference[step], step
