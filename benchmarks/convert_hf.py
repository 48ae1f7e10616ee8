"""Hugging Face -> liquid_jax -> Hugging Face conversion: throughput and peak host memory.

  python benchmarks/convert_hf.py --family=llama --d_model=1024 --layers=8

Writes a random checkpoint of the requested shape (float32 safetensors shards), then
times reading it into host arrays, the full conversion to an Orbax checkpoint (with
the 8192-code extension) and the export back. Peak memory is the process's resident
high-water mark (VmHWM, reset before each step) above the resident size before it.
A warm-up round trip of a tiny model first loads and initialises the jax, Orbax and
TensorStore runtimes, a fixed cost unrelated to the model's size (reported as
``runtime_init_mb``). Results go to benchmarks/results/convert_hf.json.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import jax
import numpy as np
from absl import app, flags

from liquid_jax.convert import hf, safetensors_io
from liquid_jax.convert.hf_mapping import hf_param_names
from liquid_jax.model.config import FAMILY_DEFAULTS, TransformerConfig

_FAMILY = flags.DEFINE_enum("family", "llama", ["gemma", "llama", "qwen2"], "Architecture.")
_D_MODEL = flags.DEFINE_integer("d_model", 1024, "Hidden size.")
_LAYERS = flags.DEFINE_integer("layers", 8, "Number of layers.")
_VOCAB = flags.DEFINE_integer("vocab", 32_000, "Text vocabulary size.")
_SHARD_MB = flags.DEFINE_integer("shard_mb", 100, "Safetensors shard size of the input.")
_OUT = flags.DEFINE_string("out", os.path.join(os.path.dirname(__file__), "results", "convert_hf.json"),
                           "Where the JSON results go.")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _measure(fn):
    """(result, seconds, peak resident bytes above the start)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = _status_kb("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    return result, seconds, (_status_kb("VmHWM") - start) * 1024


def _write_random_checkpoint(config: TransformerConfig, directory: str) -> int:
    rng = np.random.default_rng(0)
    mappings = hf_param_names(config)
    specs = [safetensors_io.TensorSpec(m.hf_name, m.hf_shape, np.dtype(np.float32)) for m in mappings]
    tensors = ((m.hf_name, rng.standard_normal(m.hf_shape, np.float32) * 0.02) for m in mappings)
    safetensors_io.write_sharded(directory, specs, tensors, _SHARD_MB.value * 1024**2)
    with open(os.path.join(directory, hf.CONFIG_FILE), "w") as f:
        json.dump(hf.hf_config_dict(config, "float32"), f)
    return sum(spec.nbytes for spec in specs)


def _config(d: int, layers: int, vocab: int) -> TransformerConfig:
    return TransformerConfig(
        family=_FAMILY.value, vocab_size=vocab, d_model=d, num_layers=layers,
        num_heads=d // 64, num_kv_heads=max(1, d // 256), head_dim=64, mlp_dim=4 * d,
        **FAMILY_DEFAULTS[_FAMILY.value],
    )


def _round_trip(root: str, name: str) -> None:
    """HF directory ``root/name`` -> liquid_jax checkpoint -> HF directory."""
    hf.convert_hf_to_liquid(os.path.join(root, name), os.path.join(root, f"{name}_ck"), progress=False)
    hf.convert_liquid_to_hf(os.path.join(root, f"{name}_ck"), os.path.join(root, f"{name}_out"),
                            progress=False)


def main(argv):
    del argv
    d = _D_MODEL.value
    config = _config(d, _LAYERS.value, _VOCAB.value)
    with tempfile.TemporaryDirectory() as root:
        src = os.path.join(root, "hf")
        os.makedirs(src)
        model_bytes = _write_random_checkpoint(config, src)
        os.makedirs(os.path.join(root, "tiny"))
        _write_random_checkpoint(_config(64, 1, 256), os.path.join(root, "tiny"))
        _, _, init_peak = _measure(lambda: _round_trip(root, "tiny"))
        (_, params), read_s, read_peak = _measure(
            lambda: hf.load_hf_params(src, extend_image_codes=0, progress=False))
        del params
        _, convert_s, convert_peak = _measure(lambda: hf.convert_hf_to_liquid(
            src, os.path.join(root, "ck"), progress=False))
        _, export_s, export_peak = _measure(lambda: hf.convert_liquid_to_hf(
            os.path.join(root, "ck"), os.path.join(root, "out"), progress=False))
    mb = model_bytes / 1e6
    results = {
        "benchmark": "convert_hf",
        "family": config.family, "d_model": d, "layers": config.num_layers, "vocab": config.vocab_size,
        "model_mb_float32": round(mb, 1),
        "runtime_init_mb": round(init_peak / 1e6, 1),
        "read_seconds": round(read_s, 3), "read_mb_per_s": round(mb / read_s, 1),
        "read_peak_rss_over_model": round(read_peak / model_bytes, 3),
        "hf_to_liquid_seconds": round(convert_s, 3),
        "hf_to_liquid_peak_rss_over_model": round(convert_peak / model_bytes, 3),
        "liquid_to_hf_seconds": round(export_s, 3),
        "liquid_to_hf_peak_rss_over_model": round(export_peak / model_bytes, 3),
        "jax": jax.__version__, "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
