"""benchmarks/accelerator.py: its --tiny CPU run (without Grain, which accelerator
machines lack) measures every part with finite positive numbers that agree with their
own timings and an independent FLOP count, its mirrored scaling-run settings are those
of configs/*_liquid.py, and full-size shapes on a CPU are refused with exit code 2."""

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

from helpers import REPO
from liquid_jax.model.config import TransformerConfig, load_config_file

SCRIPT = os.path.join(REPO, "benchmarks", "accelerator.py")
# The script as __main__ with `import grain` failing.
WITHOUT_GRAIN = ("import runpy, sys; sys.modules['grain'] = None; sys.argv = sys.argv[1:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one CPU device
    return subprocess.run([sys.executable, "-c", WITHOUT_GRAIN, SCRIPT, *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def load_script():
    spec = importlib.util.spec_from_file_location("accelerator_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def model_flops_per_token(m: dict, seq_len: int) -> float:
    """6 x (attention projections + gated MLP + LM head) + 6 x causal attention."""
    d, hd, h, k, layers = m["d_model"], m["head_dim"], m["num_heads"], m["num_kv_heads"], m["num_layers"]
    weights = layers * (d * hd * (2 * h + 2 * k) + 3 * d * m["mlp_dim"]) + d * m["vocab_size"]
    return 6.0 * weights + 6.0 * layers * seq_len * h * hd


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator") / "tiny.json"
    done = run_script("--tiny", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return json.loads(out.read_text())


def test_tiny_run_measures_every_part(tiny):
    by_name = {m["name"]: m for m in tiny["measurements"]}
    assert sorted(by_name) == [
        "t2i/tiny_gemma", "train/tiny_gemma2/flash_gpu", "train/tiny_gemma2/xla",
        "train/tiny_llama/flash_gpu", "train/tiny_llama/xla",
    ]
    for m in by_name.values():
        assert "error" not in m, m
        assert positive(m["tokens_per_s"]) and math.isfinite(m["compile_seconds"]) and m["compile_seconds"] >= 0
        assert m["device_kind"] == tiny["device_kind"] == "cpu"
        assert m["versions"]["jax"] and m["versions"]["torch"] and m["versions"]["transformers"]
        assert m["mfu"] is None and m["mfu_reason"]


def test_tiny_train_numbers_agree_with_their_timings_and_flops(tiny):
    for m in (m for m in tiny["measurements"] if m["kind"] == "train"):
        c = m["config"]
        assert c["model"]["attention"] == m["attention"] and m["interpret_mode"] == (m["attention"] != "xla")
        assert "'cpu'" in m["mfu_reason"]
        assert c["model"]["dtype"] == "bfloat16" and c["model"]["remat"] == "full" and c["model"]["scan_layers"]
        assert len(m["step_seconds"]) == 2 and all(positive(s) for s in m["step_seconds"])
        assert m["tokens_per_s"] == pytest.approx(c["rows"] * c["seq_len"] / statistics.median(m["step_seconds"]))
        assert m["model_flops_per_token"] == pytest.approx(model_flops_per_token(c["model"], c["seq_len"]))
        # A real cross-entropy over the vocabulary: near log(V) from a random start.
        assert all(math.isfinite(x) for x in m["losses"])
        assert abs(m["losses"][0] - math.log(c["model"]["vocab_size"])) < 0.5


def test_tiny_t2i_compares_ours_with_upstream(tiny):
    (m,) = [m for m in tiny["measurements"] if m["kind"] == "t2i"]
    c = m["config"]
    assert m["image_tokens"] == c["images"] * c["grid"][0] * c["grid"][1] == 4 * 64
    assert positive(m["upstream_tokens_per_s"]) and positive(m["ratio"])
    assert m["ratio"] == pytest.approx(m["tokens_per_s"] / m["upstream_tokens_per_s"])
    assert m["tokens_per_s"] == pytest.approx(m["image_tokens"] / m["ours_seconds"])
    assert m["upstream_tokens_per_s"] == pytest.approx(m["image_tokens"] / m["upstream_seconds"])
    # Upstream's inference_t2i.py defaults.
    assert (c["guidance_scale"], c["temperature"], c["top_p"]) == (7.0, 0.99, 0.96)


@pytest.mark.parametrize("run", ["llama3_2_1b_liquid", "gemma2_2b_liquid"])
def test_mirrored_settings_are_the_scaling_run_configs(run):
    bench = load_script()
    config = load_config_file(os.path.join(REPO, "configs", f"{run}.py"))
    config = config.copy_and_resolve_references()
    assert bench.train_model_config(bench.TRAIN_RUNS[run]) == TransformerConfig.from_dict(config.model.to_dict())
    assert bench.SCALING_RUN_OPTIMIZER == {k: config.optimizer[k] for k in bench.SCALING_RUN_OPTIMIZER}
    assert set(bench.SCALING_RUN_OPTIMIZER) == set(config.optimizer.keys())
    assert bench.SCALING_RUN_TRAIN == {k: config.train[k] for k in bench.SCALING_RUN_TRAIN}
    assert bench.SCALING_RUN_SEQ_LEN == config.data.seq_len


def test_full_shapes_on_a_cpu_are_refused(tmp_path):
    done = run_script("--out", str(tmp_path / "full.json"))
    assert done.returncode == 2 and "add --tiny" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "full.json").exists()
