"""Multi-host start-up: ``jax.distributed.initialize`` when there are several processes."""

from __future__ import annotations

import logging
import os

from absl import flags

MODES = ("auto", "on", "off")


def cluster_detected() -> bool:
    """True under a multi-task SLURM job or on a multi-worker Cloud TPU slice."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(
    mode: str = "auto",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Connects this process to the others.

    An explicit ``coordinator_address`` always initialises; ``mode="auto"`` does so when
    a cluster is detected (jax then reads SLURM's or the TPU's environment itself).
    """
    import jax

    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}; expected one of {MODES}")
    if mode == "off":
        return
    if coordinator_address or mode == "on" or cluster_detected():
        jax.distributed.initialize(
            coordinator_address=coordinator_address or None,
            num_processes=num_processes,
            process_id=process_id,
        )
        logging.info(
            "process %d of %d, %d local / %d global devices",
            jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count(),
        )


def define_flags() -> None:
    """--distributed, --coordinator_address, --num_processes, --process_id, for commands
    that run the same on every host."""
    flags.DEFINE_enum("distributed", "auto", list(MODES),
                      "jax.distributed.initialize(): auto = when SLURM or a TPU pod is detected.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
    flags.DEFINE_integer("num_processes", None, "Number of processes.")
    flags.DEFINE_integer("process_id", None, "Index of this process.")


def initialize_from_flags() -> None:
    """``initialize`` with the values of ``define_flags``'s flags."""
    values = flags.FLAGS
    initialize(values.distributed, values.coordinator_address, values.num_processes, values.process_id)
