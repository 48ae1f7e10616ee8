"""``liquid-jax train --config configs/X.py --config.key=value --workdir DIR``.

Resumes automatically from the newest checkpoint in ``--workdir``. On several hosts,
run the same command on every host (see ``launch/``).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from liquid_jax.train import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and TensorBoard events.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "jax.distributed.initialize(): auto = when SLURM or a TPU pod is detected.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")


parse_flags = config_lib.parse_flags  # used by liquid_jax.cli


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None or not _WORKDIR.value:
        raise app.UsageError("--config and --workdir are required")
    from liquid_jax.train import distributed, trainer

    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    result = trainer.train(_CONFIG.value, _WORKDIR.value)
    state = "preempted at" if result.preempted else "finished at"
    print(f"training {state} step {result.step}; last metrics: {result.last_metrics}")
