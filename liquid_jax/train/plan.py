"""Ahead-of-time compilation of the real train step for an accelerator topology.

Nothing is allocated: params, optimizer state and batch are ShapeDtypeStructs with
their shardings on a mesh over the topology's (abstract) devices; the step is lowered
and compiled by the TPU (or GPU) compiler available on this machine, and XLA's memory
analysis is compared with the chip's HBM. A TPU compile that exceeds HBM fails with
RESOURCE_EXHAUSTED, which is reported as "does not fit".
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import ml_collections
from jax.experimental import topologies
from jax.sharding import NamedSharding

from liquid_jax.model.config import TransformerConfig
from liquid_jax.sharding import make_mesh
from liquid_jax.train import flops
from liquid_jax.train import optimizer as optimizer_lib
from liquid_jax.train import state as state_lib
from liquid_jax.train import train_step as step_lib

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice: the platform, jax's topology string and HBM per chip."""

    platform: str
    name: str
    hbm_bytes: int


# Cloud TPU slice names -> jax topology strings (chips per slice = product of the dims).
TOPOLOGIES: dict[str, Topology] = {
    "v4-32": Topology("tpu", "v4:2x2x4", 32 * GiB),
    "v4-128": Topology("tpu", "v4:4x4x4", 32 * GiB),
    "v5p-128": Topology("tpu", "v5:4x4x4", 95 * GiB),
    "v5p-256": Topology("tpu", "v5:4x4x8", 95 * GiB),
    "v5e-16": Topology("tpu", "v5e:4x4", 16 * GiB),
    "v5e-256": Topology("tpu", "v5e:16x16", 16 * GiB),
    "v6e-256": Topology("tpu", "v6e:16x16", 32 * GiB),
}
HBM_BY_GENERATION = {"v4": 32 * GiB, "v5": 95 * GiB, "v5p": 95 * GiB, "v5e": 16 * GiB, "v6e": 32 * GiB}
# Generations with two TensorCores per chip, which jax drives as one device ("megacore").
MEGACORE_GENERATIONS = ("v4", "v5", "v5p")
GPU_HBM = {"H100": 80 * GiB, "H200": 141 * GiB, "A100": 80 * GiB}


def resolve_topology(name: str) -> Topology:
    """A slice name (``v5p-128``, ``8xH100``) or a raw jax topology (``v5e:16x16``)."""
    if name in TOPOLOGIES:
        return TOPOLOGIES[name]
    raw = re.fullmatch(r"(v\d+[a-z]*):[\dx]+", name)
    if raw and raw.group(1) in HBM_BY_GENERATION:
        return Topology("tpu", name, HBM_BY_GENERATION[raw.group(1)])
    gpu = re.fullmatch(r"(\d+)x([A-Z]\d+)", name)
    if gpu and gpu.group(2) in GPU_HBM:
        return Topology("cuda", name, GPU_HBM[gpu.group(2)])
    known = ", ".join(list(TOPOLOGIES) + ["<gen>:<AxBxC>", "<n>xH100"])
    raise ValueError(f"unknown topology {name!r}; expected one of {known}")


@dataclasses.dataclass
class PlanReport:
    """Per-device memory of the compiled step (None when it does not fit)."""

    topology: str
    devices: int
    mesh: dict[str, int]
    hbm_bytes: int
    fits: bool
    argument_bytes: int | None = None
    output_bytes: int | None = None
    alias_bytes: int | None = None
    temp_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None
    compiled_flops: float | None = None
    model_flops_per_device: float | None = None
    error: str | None = None

    def summary(self) -> str:
        gib = lambda b: f"{b / GiB:9.3f} GiB"  # noqa: E731
        mesh = " x ".join(f"{k} {v}" for k, v in self.mesh.items())
        lines = [f"topology {self.topology}: {self.devices} devices, mesh {mesh}"]
        if not self.fits:
            lines.append(f"DOES NOT FIT in {self.hbm_bytes / GiB:.1f} GiB HBM per device: {self.error}")
            return "\n".join(lines)
        lines += [
            "per-device memory:",
            f"  arguments     {gib(self.argument_bytes)}  (params, optimizer state, batch)",
            f"  outputs       {gib(self.output_bytes)}  ({gib(self.alias_bytes).strip()} aliased to donated arguments)",
            f"  temporaries   {gib(self.temp_bytes)}",
            f"  code          {gib(self.code_bytes)}",
            f"  total         {gib(self.total_bytes)}  of {self.hbm_bytes / GiB:.1f} GiB HBM "
            f"({100 * self.total_bytes / self.hbm_bytes:.0f}%)",
            f"compiled FLOPs per device per step: {self.compiled_flops:.3e} "
            "(XLA counts a scanned layer body once)",
            f"model FLOPs per device per step:    {self.model_flops_per_device:.3e} (6N + attention)",
        ]
        return "\n".join(lines)


def _devices(topology: Topology) -> list:
    # Compile-only use: do not take libtpu's one-process lock (another jax process on
    # this machine may hold it while probing for TPUs).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    options = {}
    if topology.platform == "tpu" and topology.name.split(":")[0] in MEGACORE_GENERATIONS:
        options["chip_config_name"] = "megacore"  # one device per chip, as jax runs them
    try:
        desc = topologies.get_topology_desc(topology_name=topology.name, platform=topology.platform, **options)
        return list(desc.devices)
    except NotImplementedError as e:
        raise RuntimeError(
            f"jax cannot describe {topology.platform} topology {topology.name!r} on this machine ({e}); "
            "GPU ahead-of-time compilation needs the jax CUDA plugin (pip install 'jax[cuda12]')"
        ) from e


def plan(config: ml_collections.ConfigDict, topology_name: str) -> PlanReport:
    """Compiles the train step of ``config`` for ``topology_name``; reports memory."""
    topology = resolve_topology(topology_name)
    devices = _devices(topology)
    model = TransformerConfig.from_dict(config.model.to_dict())
    mesh = make_mesh((config.mesh.data, config.mesh.fsdp, config.mesh.tensor), devices=devices)
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.train.steps)
    parts = state_lib.abstract_parts(model, mesh)
    opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
    opt_state = state_lib.abstract_opt_state(tx, parts.params, opt_shardings)
    step_lib.check_batch_size(config.data.batch_size, mesh, config.train.grad_accum_steps)
    batch_shape = (config.data.batch_size, config.data.seq_len)
    rows: NamedSharding = step_lib.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(batch_shape, jax.numpy.int32, sharding=rows) for k in step_lib.BATCH_KEYS}
    options = step_lib.StepOptions.from_config(config.train, model)
    step = step_lib.jit_train_step(
        step_lib.make_train_step(parts.graphdef, parts.rest, tx, schedule, options),
        parts.param_shardings, opt_shardings, mesh,
    )
    report = PlanReport(
        topology=f"{topology_name} ({topology.platform} {topology.name})",
        devices=len(devices),
        mesh=dict(mesh.shape),
        hbm_bytes=topology.hbm_bytes,
        fits=True,
    )
    try:
        with jax.set_mesh(mesh):
            compiled = step.lower(parts.params, opt_state, batch).compile()
    except Exception as e:  # XlaRuntimeError / JaxRuntimeError, depending on the version
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        report.fits = False
        report.error = _first_line_with(str(e), "RESOURCE_EXHAUSTED")
        return report
    memory = compiled.memory_analysis()
    report.argument_bytes = memory.argument_size_in_bytes
    report.output_bytes = memory.output_size_in_bytes
    report.alias_bytes = memory.alias_size_in_bytes
    report.temp_bytes = memory.temp_size_in_bytes
    report.code_bytes = memory.generated_code_size_in_bytes
    report.total_bytes = (
        report.argument_bytes + report.output_bytes - report.alias_bytes
        + report.temp_bytes + report.code_bytes
    )
    cost = _cost(compiled)
    report.compiled_flops = float(cost.get("flops", 0.0))
    tokens = batch_shape[0] * batch_shape[1]
    report.model_flops_per_device = (
        flops.training_flops_per_token(model, config.data.seq_len) * tokens / len(devices)
    )
    if report.total_bytes > topology.hbm_bytes:
        # The TPU compiler refuses some programs that cannot fit (RESOURCE_EXHAUSTED, above)
        # but not all; GPU compilers never check.
        report.fits = False
        report.error = (
            f"needs {report.total_bytes / GiB:.2f} GiB per device "
            f"(arguments {report.argument_bytes / GiB:.2f}, temporaries {report.temp_bytes / GiB:.2f})"
        )
    return report


def _cost(compiled: Any) -> dict[str, float]:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _first_line_with(text: str, needle: str) -> str:
    for line in text.splitlines():
        if needle in line:
            return line.strip()[:500]
    return text.strip().splitlines()[0][:500]
