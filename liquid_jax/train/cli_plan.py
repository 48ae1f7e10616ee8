"""``liquid-jax plan --config configs/X.py --topology v5p-128``: will the run fit?

Compiles the real train step ahead of time for the topology (on any machine with
``jax[tpu]`` installed) and prints per-device memory against the chip's HBM.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags
from ml_collections import config_flags

from liquid_jax.train import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_TOPOLOGY = flags.DEFINE_string(
    "topology", "v5p-128", "Slice name (v5p-128, v5e-256, v4-32, 8xH100) or jax topology (v5:4x4x4)."
)
_JSON = flags.DEFINE_string("json", None, "Also write the report as JSON to this file.")

parse_flags = config_lib.parse_flags  # used by liquid_jax.cli


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None:
        raise app.UsageError("--config is required")
    from liquid_jax.train import plan

    report = plan.plan(_CONFIG.value, _TOPOLOGY.value)
    print(report.summary())
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(dataclasses.asdict(report), f, indent=2)
