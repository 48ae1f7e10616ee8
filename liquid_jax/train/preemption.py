"""SIGTERM (TPU maintenance, spot preemption, SLURM time limit) -> save, then stop.

Shared by the LM and VQGAN trainers: they arm it once a step has been dispatched and ask
``should_stop(step)`` after every step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import jax


EARLY_MESSAGE = "SIGTERM before the first step finished; nothing to save; stopped"


class Preemption:
    """Context manager that turns SIGTERM into a request to save and stop.

    One process: a Python signal handler sets a flag, or, before the first step has
    finished (``armed`` False: building the state, compiling, waiting for data), ends
    the process at once with exit code 143 (128 + SIGTERM), as SIGTERM's default action
    would, since there is nothing to save. Several processes: jax's
    coordination service already watches SIGTERM and every process learns at the
    same step (``reached_preemption_sync_point``), so all save the same step together.
    """

    def __init__(self):
        self.requested = False
        self.armed = False
        self._previous = None
        self._multi = jax.process_count() > 1

    def __enter__(self) -> "Preemption":
        if not self._multi:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                self._previous = None
        return self

    def arm(self) -> None:
        """From now on SIGTERM saves the step under way and stops after it."""
        self.armed = True

    def _handle(self, signum, frame):
        if not self.armed:
            # Not an exception: raised from a handler it lands wherever Python happens to
            # be, and jax (pytree comparisons) or a gc callback wraps or swallows it.
            sys.stderr.write(f"{EARLY_MESSAGE}\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        logging.warning("SIGTERM received: saving a checkpoint after the current step")
        self.requested = True

    def should_stop(self, step: int) -> bool:
        """Whether to save ``step`` and stop; every process must ask at every step."""
        if self._multi:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
