"""Two localhost processes with 2 devices each train exactly like one process with 4."""

import os
import subprocess
import sys

import pytest

from helpers import REPO, train_support as support, data_support
from liquid_jax.train import metrics

pytestmark = pytest.mark.slow  # three processes compiling the step (~1-2 min)

WORKER = os.path.join(REPO, "tests", "helpers", "multihost_worker.py")


def launch(process_id, num_processes, port, workdir, devices, tokenizer):
    env = support.cli_env(devices)
    env["PYTHONPATH"] = os.path.join(REPO, "tests") + os.pathsep + env["PYTHONPATH"]
    return subprocess.Popen(
        [sys.executable, WORKER, str(process_id), str(num_processes), str(port), workdir, tokenizer],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_all(procs):
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-4000:]


def losses(workdir):
    return [r["loss"] for r in metrics.read_jsonl(os.path.join(workdir, metrics.JSONL_NAME))]


def test_two_processes_match_one_process(tmp_path):
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    tokenizer = data_support.train_tokenizer(str(tmp_path)).path
    wait_all([launch(0, 1, 0, single, 4, tokenizer)])
    port = support.free_port()
    wait_all([launch(i, 2, port, multi, 2, tokenizer) for i in range(2)])
    one, two = losses(single), losses(multi)
    assert len(one) == len(two) == 5
    assert len(set(one)) == 5  # the params do change (random targets: no learning)
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-5 * abs(a), (one, two)
    # Both processes wrote their part of the final checkpoint.
    assert sorted(os.listdir(os.path.join(multi, "checkpoints", "5", "data"))) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json",
    ]
