"""``liquid-jax plan --config configs/X.py --topology v5p-128``: will the run fit, how fast can it be?

  liquid-jax plan --config configs/gemma_7b_liquid.py --topology v5p-128 --config.model.attention=splash
  liquid-jax plan --config configs/gemma_7b_liquid.py --topology v5p-128 --sweep --json plan.json
  liquid-jax plan --config configs/llama3_2_1b_liquid.py --topology 8xH100

Compiles the real train step ahead of time for the topology (on any machine with
``jax[tpu]`` installed) and prints per-device memory against the chip's HBM, the FLOPs
and a roofline lower bound on the step time. ``--sweep`` does so for every attention
implementation x remat policy and marks the fastest configuration that fits. GPU
targets are estimated analytically unless the jax CUDA plugin is installed.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags
from ml_collections import config_flags

from liquid_jax import paths
from liquid_jax.train import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_TOPOLOGY = flags.DEFINE_string(
    "topology", "v5p-128", "Slice name (v5p-128, v5e-256, v4-32, 8xH100) or jax topology (v5:4x4x4)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the report (with --sweep: {rows, best}) as JSON to this file.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Plan every attention implementation x remat policy.")

parse_flags = config_lib.parse_flags  # used by liquid_jax.cli


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        raise app.UsageError("--config is required")
    from liquid_jax.train import plan

    if _SWEEP.value:
        result = plan.sweep(_CONFIG.value, _TOPOLOGY.value)
        print(result.table())
        document = result.to_json()
    else:
        report = plan.plan(_CONFIG.value, _TOPOLOGY.value)
        print(report.summary())
        document = dataclasses.asdict(report)
    if _JSON.value:
        paths.resolve(_JSON.value).write_text(json.dumps(document, indent=2))
