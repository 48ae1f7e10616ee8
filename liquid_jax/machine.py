"""The machine a run is on: CPU model, cores and its measured float32 matmul peak.

Speeds differ by more than 2x between CPUs of the same name, so timings are reported next
to this description, and the demo turns its measured peak into an expected duration.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

MATMUL_SIZE = 2048


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def matmul_peak_gflops(repeats: int = 8, size: int = MATMUL_SIZE) -> float:
    """The best rate (GFLOP/s) of a jitted ``size`` x ``size`` float32 matmul on the default
    device over ``repeats`` timed runs after one warm-up."""
    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def describe(repeats: int = 8) -> dict:
    """CPU model, cores, matmul peak (GFLOP/s), jax device kind and version, load average."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "matmul_gflops": matmul_peak_gflops(repeats),
            "device": jax.devices()[0].device_kind, "jax": jax.__version__, "load_average": os.getloadavg()[0]}
