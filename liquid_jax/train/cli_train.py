"""``liquid-jax train --config configs/X.py --config.key=value --workdir DIR``.

Resumes automatically from the newest checkpoint in ``--workdir``. On several hosts,
run the same command on every host (see ``launch/``).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from liquid_jax.train import config as config_lib
from liquid_jax.train import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and TensorBoard events.")
distributed.define_flags()


parse_flags = config_lib.parse_flags  # used by liquid_jax.cli


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    from liquid_jax.train import trainer

    distributed.initialize_from_flags()
    result = trainer.train(_CONFIG.value, _WORKDIR.value)
    state = "preempted at" if result.preempted else "finished at"
    print(f"training {state} step {result.step}; last metrics: {result.last_metrics}")
