"""Sharded model parameters and optimizer state, concrete or abstract.

The model is split once into ``(graphdef, params, rest)``; ``params`` (an nnx.State of
``nnx.Param``) and the optax state are the only arrays a train step updates. Their
shardings come from the parameters' logical axes through the one rule table in
``liquid_jax.sharding``; optimizer moments inherit them because they carry the same
Variable metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from liquid_jax import sharding
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.transformer import Transformer, abstract_model


@dataclasses.dataclass
class ModelParts:
    """The split model: static graph, trainable params, and everything else."""

    graphdef: nnx.GraphDef
    params: nnx.State
    rest: nnx.State
    param_shardings: Any


def with_shardings(shardings: Any, tree: Any) -> Any:
    """``tree`` (arrays or ShapeDtypeStructs, Variables kept) as ShapeDtypeStructs
    carrying ``shardings`` (a tree with a NamedSharding per leaf or Variable)."""

    def one(s, leaf):
        abstract = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s)
        return leaf.replace(abstract) if isinstance(leaf, nnx.Variable) else abstract

    return jax.tree.map(one, shardings, tree)


def abstract_parts(config: TransformerConfig, mesh: Mesh) -> ModelParts:
    """ShapeDtypeStruct params carrying their NamedShardings; nothing is allocated."""
    graphdef, params, rest = nnx.split(abstract_model(config), nnx.Param, ...)
    shardings = sharding.state_shardings(params, mesh)
    return ModelParts(graphdef, with_shardings(shardings, params), rest, shardings)


def init_parts(config: TransformerConfig, mesh: Mesh, seed: int) -> ModelParts:
    """Randomly initialised params, created directly in their shards."""
    abstract = abstract_parts(config, mesh)

    @jax.jit
    def make():
        _, params, rest = nnx.split(Transformer(config, rngs=nnx.Rngs(seed)), nnx.Param, ...)
        return jax.lax.with_sharding_constraint(params, abstract.param_shardings), rest

    with jax.set_mesh(mesh):
        params, rest = make()
    return ModelParts(abstract.graphdef, params, rest, abstract.param_shardings)


def opt_state_shardings(tx: optax.GradientTransformation, params: Any, mesh: Mesh) -> Any:
    """Optimizer-state shardings: moments like their params, counters replicated."""
    return sharding.state_shardings(jax.eval_shape(tx.init, params), mesh)


def init_opt_state(tx: optax.GradientTransformation, params: Any, shardings: Any) -> Any:
    """``tx.init(params)`` computed in place on the mesh."""
    return jax.jit(tx.init, out_shardings=shardings)(params)


def abstract_opt_state(tx: optax.GradientTransformation, params: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of the optimizer state with their shardings."""
    return with_shardings(shardings, jax.eval_shape(tx.init, params))
