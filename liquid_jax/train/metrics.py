"""Training metrics to TensorBoard event files and a JSONL log (one object per step).

Only process 0 writes; other processes get a writer that does nothing, so callers
never branch on the process index.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

import jax
from etils import epath

JSONL_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricsWriter:
    """Writes scalars per step to ``<workdir>/tensorboard`` and ``<workdir>/metrics.jsonl``."""

    def __init__(self, workdir: str | epath.PathLike, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        workdir = epath.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._tb = SummaryWriter(str(workdir / TENSORBOARD_DIR))
        self._jsonl = (workdir / JSONL_NAME).open("a")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """One JSON line ``{"step": step, ...}`` and one TensorBoard scalar per entry."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(f"train/{name}", value, step)
        # JSON has no NaN/Inf literals; write them as strings so the file stays valid.
        record = {k: v if math.isfinite(v) else str(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": step, **record}) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def read_jsonl(path: str | epath.PathLike) -> list[dict]:
    """All records of a metrics JSONL file."""
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]
