"""Multi-host start-up: ``jax.distributed.initialize`` when there are several processes."""

from __future__ import annotations

import logging
import os

import jax

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
