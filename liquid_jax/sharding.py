"""Device mesh and the one table that maps logical axis names to mesh axes.

Every parameter is created with ``logical_axes`` metadata (see ``logical_param``);
activations are constrained with ``constrain``. Nothing else in the package names
mesh axes directly.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
# Pure FSDP over (data, fsdp) for weights is MaxText's default; tensor parallelism
# splits heads, MLP and vocabulary.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("cache_batch", ("data", "fsdp")),
    ("cache_length", None),
    ("cache_kv_heads", "tensor"),
    ("cache_head_dim", None),
    # VQGAN
    ("conv_in", None),
    ("conv_out", None),
    ("conv_height", None),
    ("conv_width", None),
    ("codebook", None),
    ("codebook_dim", None),
)


def logical_param(value: jax.Array, logical_axes: Sequence[str | None]) -> nnx.Param:
    """A parameter annotated with logical axis names (one per array dimension)."""
    if len(logical_axes) != np.ndim(value):
        raise ValueError(
            f"logical_axes {tuple(logical_axes)} do not match a parameter of shape {np.shape(value)}"
        )
    return nnx.Param(value, logical_axes=tuple(logical_axes))


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    rules: Sequence[tuple[str, Any]] = LOGICAL_RULES,
    mesh: Mesh | None = None,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps logical names to a PartitionSpec; a mesh axis is used at most once.

    With ``mesh``, mesh axes of size 1 are dropped so specs stay minimal. With ``shape``
    too, a mesh axis that does not divide its dimension is dropped (that dimension is
    replicated over it), e.g. 14 query heads on a tensor axis of 4.
    """
    if logical_axes is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for dim, name in enumerate(logical_axes):
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_RULES")
        target = table[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(
            a for a in axes if a not in used and (mesh is None or mesh.shape.get(a, 1) > 1)
        )
        if mesh is not None and shape is not None:
            kept, size = [], 1
            for a in axes:
                if shape[dim] % (size * mesh.shape[a]) == 0:
                    kept.append(a)
                    size *= mesh.shape[a]
            axes = tuple(kept)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def mesh_shape(shape: dict[str, int] | Sequence[int], count: int) -> list[int]:
    """A (data, fsdp, tensor) shape over ``count`` devices; one entry may be -1 ("the rest")."""
    if isinstance(shape, dict):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected {MESH_AXES}")
        shape = [shape.get(a, 1) for a in MESH_AXES]
    shape = [int(s) for s in shape]
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
        if count % known:
            raise ValueError(f"mesh shape {shape} does not divide {count} devices")
        shape[shape.index(-1)] = count // known
    if int(np.prod(shape)) != count:
        raise ValueError(f"mesh shape {shape} needs {int(np.prod(shape))} devices, have {count}")
    return shape


def make_mesh(
    shape: dict[str, int] | Sequence[int] = (-1, 1, 1),
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; one entry may be -1 ("the rest")."""
    devices = list(devices if devices is not None else jax.devices())
    return jax.make_mesh(
        tuple(mesh_shape(shape, len(devices))), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def state_shardings(state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> Any:
    """NamedShardings for an nnx.State (or a tree of Variables) from their logical_axes."""

    def one(var):
        axes = var.get_metadata().get("logical_axes") if isinstance(var, nnx.Variable) else None
        return NamedSharding(mesh, logical_to_spec(axes, rules, mesh, np.shape(var)))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint by logical names; a no-op outside a mesh context."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, LOGICAL_RULES, mesh))


def batch_shard_count(mesh: Mesh | None, rules: Sequence[tuple[str, Any]] = LOGICAL_RULES) -> int:
    """How many ways the logical "batch" axis is split on ``mesh`` (1 without a mesh)."""
    if mesh is None:
        return 1
    axes = logical_to_spec(("batch",), rules, mesh)[0]
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return int(np.prod([mesh.shape[a] for a in axes]))


def pad_to_batch_shards(rows: int, mesh: Mesh | None) -> int:
    """``rows`` rounded up to the same whole number of rows on every batch shard of ``mesh``."""
    shards = batch_shard_count(mesh)
    return -(-rows // shards) * shards
