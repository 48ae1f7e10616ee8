"""Ahead-of-time compilation of the real train step for an accelerator topology.

Nothing is allocated: params, optimizer state and batch are ShapeDtypeStructs with
their shardings on a mesh over the topology's (abstract) devices; the step is lowered
and compiled by the TPU (or GPU) compiler available on this machine, and XLA's memory
analysis is compared with the chip's HBM. A TPU compile that exceeds HBM fails with
RESOURCE_EXHAUSTED, which is reported as "does not fit". A GPU target needs the CUDA
plugin to compile; without it the report is an analytic estimate and says so.

The step-time lower bound is a roofline: the larger of the matmul FLOPs the step executes
(forward, backward and what the remat policy recomputes; ``flops.step_flops_per_token``)
over the chip's dense bf16 peak, and the bytes it must move over the chip's HBM
bandwidth (``chips.CHIPS``, with the vendors' published figures). ``sweep`` plans every
attention implementation x remat policy and marks the fastest configuration that fits.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import topologies
from jax.sharding import AbstractMesh, NamedSharding
from tqdm import tqdm

from liquid_jax.model import attention
from liquid_jax.model.config import TransformerConfig
from liquid_jax.train.chips import CHIPS, GiB
from liquid_jax.model.transformer import abstract_model
from liquid_jax.sharding import MESH_AXES, make_mesh, mesh_shape, state_shardings
from liquid_jax.train import chips, flops
from liquid_jax.train import optimizer as optimizer_lib
from liquid_jax.train import state as state_lib
from liquid_jax.train import train_step as step_lib



@dataclasses.dataclass(frozen=True)
class Topology:
    """A named slice: the platform, jax's topology string, its chip and (GPU) chip count."""

    platform: str
    name: str
    chip: chips.Chip
    count: int | None = None  # GPU nodes: chips; TPU slices: from the topology

    @property
    def hbm_bytes(self) -> int:
        return self.chip.hbm_bytes


# Cloud TPU slice names -> jax topology strings (chips per slice = product of the dims).
TOPOLOGIES: dict[str, Topology] = {
    "v4-32": Topology("tpu", "v4:2x2x4", CHIPS["v4"]),
    "v4-128": Topology("tpu", "v4:4x4x4", CHIPS["v4"]),
    "v5p-128": Topology("tpu", "v5:4x4x4", CHIPS["v5p"]),
    "v5p-256": Topology("tpu", "v5:4x4x8", CHIPS["v5p"]),
    "v5e-16": Topology("tpu", "v5e:4x4", CHIPS["v5e"]),
    "v5e-256": Topology("tpu", "v5e:16x16", CHIPS["v5e"]),
    "v6e-256": Topology("tpu", "v6e:16x16", CHIPS["v6e"]),
}
# Generations with two TensorCores per chip, which jax drives as one device ("megacore").
MEGACORE_GENERATIONS = ("v4", "v5", "v5p")
GPU_CHIPS = ("H100", "H200", "A100")
SWEEP_REMAT = ("none", "full", "dots", "dots_no_batch", "save_qkv_proj", "minimal")


def resolve_topology(name: str) -> Topology:
    """A slice name (``v5p-128``, ``8xH100``) or a raw jax topology (``v5e:16x16``)."""
    if name in TOPOLOGIES:
        return TOPOLOGIES[name]
    raw = re.fullmatch(r"(v\d+[a-z]*):[\dx]+", name)
    if raw and raw.group(1) in chips.TPU_GENERATIONS:
        return Topology("tpu", name, CHIPS[chips.TPU_GENERATIONS[raw.group(1)]])
    gpu = re.fullmatch(r"(\d+)x([A-Z]\d+)", name)
    if gpu and gpu.group(2) in GPU_CHIPS:
        return Topology("cuda", name, CHIPS[gpu.group(2)], int(gpu.group(1)))
    known = ", ".join(list(TOPOLOGIES) + ["<gen>:<AxBxC>", "<n>xH100", "<n>xH200", "<n>xA100"])
    raise ValueError(f"unknown topology {name!r}; expected one of {known}")


def _kernel_platform(topology: Topology) -> str:
    return "gpu" if topology.platform == "cuda" else topology.platform


@dataclasses.dataclass
class PlanReport:
    """Per-device memory of the compiled step (None when it does not fit), its FLOPs and
    bytes, and the roofline lower bound on its time. ``estimate`` says how the numbers were
    obtained when not by compiling."""

    topology: str
    devices: int
    mesh: dict[str, int]
    hbm_bytes: int
    fits: bool
    attention: str = "xla"
    remat: str = "none"
    chip: str = ""
    argument_bytes: int | None = None
    output_bytes: int | None = None
    alias_bytes: int | None = None
    temp_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None
    compiled_flops: float | None = None
    compiled_bytes_accessed: float | None = None
    model_flops_per_device: float | None = None
    step_flops_per_device: float | None = None
    step_time_lower_bound_s: float | None = None
    bound: str | None = None
    mfu_ceiling: float | None = None
    estimate: str | None = None
    error: str | None = None

    def summary(self) -> str:
        gib = lambda b: f"{b / GiB:9.3f} GiB"  # noqa: E731
        mesh = " x ".join(f"{k} {v}" for k, v in self.mesh.items())
        lines = [f"topology {self.topology}: {self.devices} devices, mesh {mesh}, attention {self.attention}, "
                 f"remat {self.remat}"]
        if self.estimate:
            lines.append(f"ANALYTIC ESTIMATE, not compiled: {self.estimate}")
        if not self.fits and self.total_bytes is None:
            lines.append(f"DOES NOT FIT in {self.hbm_bytes / GiB:.1f} GiB HBM per device: {self.error}")
            return "\n".join(lines)
        lines += [
            "per-device memory:",
            f"  arguments     {gib(self.argument_bytes)}  (params, optimizer state, batch)",
            f"  outputs       {gib(self.output_bytes)}  ({gib(self.alias_bytes).strip()} aliased to donated arguments)",
            f"  temporaries   {gib(self.temp_bytes)}",
            f"  code          {gib(self.code_bytes)}",
            f"  total         {gib(self.total_bytes)}  of {self.hbm_bytes / GiB:.1f} GiB HBM "
            f"({100 * self.total_bytes / self.hbm_bytes:.0f}%)" + ("" if self.fits else "  DOES NOT FIT"),
        ]
        if self.compiled_flops is not None:
            lines.append(f"compiled FLOPs per device per step: {self.compiled_flops:.3e} "
                         "(XLA counts a scanned layer body once)")
        lines += [
            f"model FLOPs per device per step:    {self.model_flops_per_device:.3e} (6N + attention)",
            f"executed matmul FLOPs per device:   {self.step_flops_per_device:.3e} (with what remat recomputes)",
            f"step time lower bound: {self.step_time_lower_bound_s:.3f} s ({self.bound}-bound on {self.chip}), "
            f"MFU ceiling {100 * self.mfu_ceiling:.0f}%",
        ]
        return "\n".join(lines)


def _devices(topology: Topology) -> list | None:
    """The topology's abstract devices; None for a GPU target this machine cannot describe."""
    # Compile-only use: do not take libtpu's one-process lock (another jax process on
    # this machine may hold it while probing for TPUs).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    options = {}
    if topology.platform == "tpu" and topology.name.split(":")[0] in MEGACORE_GENERATIONS:
        options["chip_config_name"] = "megacore"  # one device per chip, as jax runs them
    try:
        desc = topologies.get_topology_desc(topology_name=topology.name, platform=topology.platform, **options)
        return list(desc.devices)
    except (NotImplementedError, RuntimeError) as e:
        if topology.platform == "cuda":
            return None
        raise RuntimeError(f"jax cannot describe {topology.platform} topology {topology.name!r} on this "
                           f"machine ({e}); TPU ahead-of-time compilation needs jax[tpu] (libtpu)") from e


def _with_attention(config: ml_collections.ConfigDict, topology: Topology) -> ml_collections.ConfigDict:
    """``config`` with the attention implementation its rows get on the topology."""
    config = copy.deepcopy(config)
    config.model.attention = attention.resolve_implementation(
        config.model.attention, config.data.seq_len, _kernel_platform(topology))
    return config


def plan(config: ml_collections.ConfigDict, topology_name: str) -> PlanReport:
    """Compiles the train step of ``config`` for ``topology_name``; reports memory, FLOPs
    and the roofline bound. A GPU target that this machine cannot compile for (no CUDA
    plugin) gets an analytic estimate from the same abstract shapes instead."""
    topology = resolve_topology(topology_name)
    config = _with_attention(config, topology)
    model = TransformerConfig.from_dict(config.model.to_dict())
    devices = _devices(topology)
    if devices is None:
        return _roofline(_analytic(config, model, topology, topology_name), config, model, topology)
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
    report = _report(config, model, topology, topology_name, dict(mesh.shape), len(devices))
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
    cost = _cost(compiled)
    report.compiled_flops = float(cost.get("flops", 0.0))
    report.compiled_bytes_accessed = float(cost.get("bytes accessed", 0.0))
    return _roofline(report, config, model, topology)


def _report(config, model, topology, topology_name, mesh, devices) -> PlanReport:
    return PlanReport(
        topology=f"{topology_name} ({topology.platform} {topology.name})", devices=devices, mesh=mesh,
        hbm_bytes=topology.hbm_bytes, fits=True, attention=model.attention, remat=model.remat,
        chip=topology.chip.name,
    )


def _roofline(report: PlanReport, config, model: TransformerConfig, topology: Topology) -> PlanReport:
    """Fills the total, the fit, the FLOPs and the step-time lower bound: the larger of
    executed matmul FLOPs over the chip's bf16 peak and bytes over its HBM bandwidth
    (bytes: at least every argument read, every output and temporary written once, and
    at least what XLA counted)."""
    report.total_bytes = (report.argument_bytes + report.output_bytes - report.alias_bytes
                          + report.temp_bytes + report.code_bytes)
    if report.total_bytes > topology.hbm_bytes:
        # The TPU compiler refuses some programs that cannot fit (RESOURCE_EXHAUSTED)
        # but not all; GPU compilers never check.
        report.fits = False
        report.error = (f"needs {report.total_bytes / GiB:.2f} GiB per device "
                        f"(arguments {report.argument_bytes / GiB:.2f}, temporaries {report.temp_bytes / GiB:.2f})")
    tokens_per_device = config.data.batch_size * config.data.seq_len / report.devices
    seq_len = config.data.seq_len
    report.model_flops_per_device = flops.training_flops_per_token(model, seq_len) * tokens_per_device
    kernel = model.attention != "xla"
    report.step_flops_per_device = max(
        flops.step_flops_per_token(model, seq_len, model.remat, kernel) * tokens_per_device,
        report.compiled_flops or 0.0,
    )
    traffic = max(report.argument_bytes + report.output_bytes + report.temp_bytes,
                  report.compiled_bytes_accessed or 0.0)
    compute_s = report.step_flops_per_device / topology.chip.bf16_flops
    memory_s = traffic / topology.chip.hbm_bytes_per_s
    report.step_time_lower_bound_s = max(compute_s, memory_s)
    report.bound = "compute" if compute_s >= memory_s else "memory"
    report.mfu_ceiling = report.model_flops_per_device / topology.chip.bf16_flops / report.step_time_lower_bound_s
    return report


def _shard_bytes(tree: Any, shardings: Any) -> int:
    leaves, specs = jax.tree.leaves(tree), jax.tree.leaves(shardings)
    return sum(int(np.prod(s.shard_shape(a.shape))) * np.dtype(a.dtype).itemsize for a, s in zip(leaves, specs))


# Activations a remat policy keeps per token and layer, in units of (d_model, q width,
# kv width, context width, mlp width, attention-score row); "full" keeps the layer input.
_SAVED = {
    "none": (4, 1, 2, 1, 3, 1),
    "full": (1, 0, 0, 0, 0, 0),
    "dots": (2, 1, 2, 1, 3, 1),
    "dots_no_batch": (2, 1, 2, 0, 3, 0),
    "save_qkv_proj": (1, 1, 2, 0, 0, 0),
    "minimal": (2, 1, 2, 1, 2, 0),
    "minimal_offloaded": (1, 0, 0, 0, 0, 0),
}


def _activation_bytes(model: TransformerConfig, config, tokens_per_device: float, tensor: int) -> float:
    """Saved activations of every layer plus one layer's working set and a logits chunk."""
    widths = (model.d_model, model.num_heads * model.head_dim / tensor,
              model.num_kv_heads * model.head_dim / max(1, min(tensor, model.num_kv_heads)),
              model.num_heads * model.head_dim / tensor, model.mlp_dim / tensor,
              # float32 scores and probabilities per query with XLA attention; a kernel keeps none
              0.0 if model.attention != "xla" else 2 * 2 * model.num_heads / tensor * config.data.seq_len)
    per_token = lambda counts: sum(c * w for c, w in zip(counts, widths))  # noqa: E731
    dtype_bytes = np.dtype(model.dtype).itemsize
    saved = per_token(_SAVED[model.remat]) * model.num_layers
    working = per_token(_SAVED["none"])
    logits = config.train.loss_chunk_size * model.vocab_size / tensor * 4
    return (saved + working) * tokens_per_device * dtype_bytes + logits


def _analytic(config, model: TransformerConfig, topology: Topology, topology_name: str) -> PlanReport:
    """Memory from the abstract shapes and shardings, activations from the remat policy."""
    shape = mesh_shape((config.mesh.data, config.mesh.fsdp, config.mesh.tensor), topology.count)
    mesh = AbstractMesh(tuple(shape), MESH_AXES)
    params = nnx.state(abstract_model(model), nnx.Param)
    tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.train.steps)
    opt_state = jax.eval_shape(tx.init, params)
    state_bytes = _shard_bytes(params, state_shardings(params, mesh)) + _shard_bytes(
        opt_state, state_shardings(opt_state, mesh))
    step_lib.check_batch_size(config.data.batch_size, mesh, config.train.grad_accum_steps)
    tokens_per_device = config.data.batch_size * config.data.seq_len / (shape[0] * shape[1])
    batch_bytes = len(step_lib.BATCH_KEYS) * 4 * tokens_per_device
    report = _report(config, model, topology, topology_name, dict(zip(MESH_AXES, shape)), topology.count)
    report.estimate = ("this machine cannot compile for GPU (no CUDA plugin); parameters and optimizer state "
                       "from the abstract shapes and shardings, activations from the remat policy")
    report.argument_bytes = int(state_bytes + batch_bytes)
    report.output_bytes = report.alias_bytes = int(state_bytes)
    report.temp_bytes = int(_activation_bytes(model, config, tokens_per_device, shape[2]))
    report.code_bytes = 0
    return report


@dataclasses.dataclass
class Sweep:
    """Every (attention, remat) configuration of one topology and the fastest that fits."""

    rows: list[PlanReport]
    best: PlanReport | None

    def table(self) -> str:
        lines = [f"{'attention':<10} {'remat':<14} {'fits':<5} {'total GiB':>9} {'temp GiB':>9} "
                 f"{'step >= s':>9} {'MFU <=':>7}"]
        for row in self.rows:
            total = "-" if row.total_bytes is None else f"{row.total_bytes / GiB:9.2f}"
            temp = "-" if row.temp_bytes is None else f"{row.temp_bytes / GiB:9.2f}"
            step = "-" if row.step_time_lower_bound_s is None else f"{row.step_time_lower_bound_s:9.3f}"
            mfu = "-" if row.mfu_ceiling is None else f"{100 * row.mfu_ceiling:6.0f}%"
            mark = "  <- best" if row is self.best else ""
            lines.append(f"{row.attention:<10} {row.remat:<14} {str(row.fits):<5} {total:>9} {temp:>9} "
                         f"{step:>9} {mfu:>7}{mark}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"rows": [dataclasses.asdict(r) for r in self.rows],
                "best": None if self.best is None else dataclasses.asdict(self.best)}


def sweep(config: ml_collections.ConfigDict, topology_name: str,
          remats: tuple[str, ...] = SWEEP_REMAT, progress: bool = True) -> Sweep:
    """``plan`` for XLA attention and the platform's kernel, each with every remat policy."""
    topology = resolve_topology(topology_name)
    kernel = attention.resolve_implementation("auto", config.data.seq_len, _kernel_platform(topology))
    attentions = ("xla",) if kernel == "xla" else ("xla", kernel)
    rows = []
    for implementation, remat in tqdm([(a, r) for a in attentions for r in remats], desc="plans",
                                      disable=not progress):
        variant = copy.deepcopy(config)
        variant.model.attention, variant.model.remat = implementation, remat
        rows.append(plan(variant, topology_name))
    fitting = [r for r in rows if r.fits and r.step_time_lower_bound_s is not None]
    return Sweep(rows, min(fitting, key=lambda r: r.step_time_lower_bound_s) if fitting else None)


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
