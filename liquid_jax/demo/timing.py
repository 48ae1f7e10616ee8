"""How long the demo takes here: this machine's description (``<workdir>/machine.json``),
the time each stage should take and the time it took.

A stage's cost is its wall seconds times the float32 matmul peak (GFLOP/s) of the machine
it was measured on (``stage_cost_gflop`` in configs/demo.py; a training stage's cost is per
step, ``step_cost_gflop``, times the steps its config asks for); divided by this machine's
measured peak it gives the expected seconds. At the demo's sizes the steps are small-matrix
bound, so this is an estimate good to about a third, not a promise.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import ml_collections

from liquid_jax import machine

MACHINE_FILE = "machine.json"

# Where each training stage's config keeps its number of steps.
TRAINING_STEPS = {"vqgan": ("vqgan", "steps"), "base_lm": ("base", "train", "steps"),
                  "liquid": ("liquid", "train", "steps")}


def calibrate(workdir: str) -> dict:
    """Measures this machine (about a second) and records it in ``<workdir>/machine.json``."""
    info = machine.describe()
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MACHINE_FILE), "w") as f:
        json.dump(info, f, indent=1)
    return info


def read_machine(workdir: str) -> dict | None:
    """The machine recorded by the last ``calibrate`` in ``workdir``, or None."""
    path = os.path.join(workdir, MACHINE_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def expected_seconds(config: ml_collections.ConfigDict, matmul_gflops: float,
                     stages: Sequence[str]) -> dict[str, float]:
    """Expected wall seconds of each of ``stages`` on a machine with this matmul peak."""
    return {name: cost / matmul_gflops for name in stages
            if (cost := stage_cost_gflop(config, name)) is not None}


def stage_cost_gflop(config: ml_collections.ConfigDict, name: str) -> float | None:
    """Stage ``name``'s cost at ``config``'s sizes (None when the config gives none)."""
    if name in TRAINING_STEPS and name in config.step_cost_gflop:
        section = config
        for key in TRAINING_STEPS[name]:
            section = section[key]
        return config.step_cost_gflop[name] * section
    return config.stage_cost_gflop.get(name)


def plan_line(info: dict, expected: dict[str, float]) -> str:
    """What the demo prints before it starts."""
    total = sum(expected.values())
    longest = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                        sorted(expected.items(), key=lambda kv: -kv[1])[:3])
    return (f"this machine: {info['cpu']}, {info['cores']} cores, {info['matmul_gflops']:.0f} GFLOP/s "
            f"float32 matmul peak; expected time {total / 60:.1f} min ({longest}, ...)")


def summary_rows(times: dict[str, dict[str, float]], expected: dict[str, float]) -> list[dict]:
    """One row per finished stage: seconds, CPU seconds and the expected seconds."""
    return [{"stage": name, "seconds": round(t["seconds"], 1), "cpu_seconds": round(t["cpu_seconds"], 1),
             "expected_seconds": round(expected[name], 1) if name in expected else None}
            for name, t in times.items()]
