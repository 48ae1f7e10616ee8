"""The pure training step over split NNX state, and its jitted, sharded form.

``nnx.split`` happens once, outside; the step is a plain function of
``(params, opt_state, batch)`` so ``jax.jit`` sees fixed shardings and donates the
old state. Gradient accumulation runs the micro-batches through ``lax.scan`` and
normalises by the loss-token count of the whole batch, so one step with ``k``
micro-batches equals one step over the full batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from liquid_jax import sharding
from liquid_jax.train import loss as loss_lib

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")
Batch = dict[str, jax.Array]
StepFn = Callable[[nnx.State, Any, Batch], tuple[nnx.State, Any, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What the step needs besides the model: vocabulary layout and loss settings."""

    vocab_size: int
    text_vocab_size: int
    z_loss_coef: float = 0.0
    loss_chunk_size: int | None = None
    grad_accum_steps: int = 1

    @classmethod
    def from_config(cls, train: Any, model: Any) -> "StepOptions":
        """From a run config's ``train`` section and its TransformerConfig."""
        return cls(
            vocab_size=model.vocab_size,
            text_vocab_size=model.text_vocab_size,
            z_loss_coef=train.z_loss,
            loss_chunk_size=train.loss_chunk_size or None,
            grad_accum_steps=train.grad_accum_steps,
        )


def split_microbatches(batch: Batch, steps: int) -> Batch:
    """``[B, ...] -> [steps, B // steps, ...]``; micro-batch ``i`` takes rows ``i::steps``.

    Strided rows keep every micro-batch spread over all data-parallel shards.
    """

    def one(x):
        if x.shape[0] % steps:
            raise ValueError(f"batch size {x.shape[0]} is not divisible by grad_accum_steps {steps}")
        x = x.reshape(x.shape[0] // steps, steps, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return {k: one(v) for k, v in batch.items()}


def _learning_rate(schedule: optax.Schedule, opt_state: Any) -> jax.Array:
    counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    return schedule(counts[0][1]) if counts else jnp.zeros((), jnp.float32)


def make_gradient_fn(
    graphdef: nnx.GraphDef, rest: nnx.State, options: StepOptions
) -> Callable[[nnx.State, Batch], tuple[nnx.State, loss_lib.LossSums]]:
    """``grads, sums = fn(params, batch)``: gradients of the batch-mean objective."""

    def micro_objective(params, micro: Batch, normaliser):
        model = nnx.merge(graphdef, params, rest)
        tokens = sharding.constrain(micro["tokens"], ("batch", "activation_length"))
        h, _ = model.hidden_states(tokens, micro["positions"], micro["segment_ids"])
        sums = loss_lib.loss_sums(
            lambda start, end: model.project(h, start, end),
            micro["targets"],
            micro["loss_mask"],
            vocab_size=options.vocab_size,
            text_vocab_size=options.text_vocab_size,
            chunk_size=options.loss_chunk_size,
        )
        return loss_lib.objective(sums, options.z_loss_coef, normaliser), sums

    grad_fn = jax.grad(micro_objective, has_aux=True)

    def gradients(params, batch: Batch):
        normaliser = jnp.sum(batch["loss_mask"].astype(jnp.float32))
        if options.grad_accum_steps == 1:
            return grad_fn(params, batch, normaliser)

        def body(carry, micro):
            grads, sums = carry
            g, s = grad_fn(params, micro, normaliser)
            return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s)), None

        zeros = (
            jax.tree.map(jnp.zeros_like, params),
            loss_lib.LossSums(*[jnp.zeros((), jnp.float32)] * len(loss_lib.LossSums._fields)),
        )
        (grads, sums), _ = jax.lax.scan(
            body, zeros, split_microbatches(batch, options.grad_accum_steps)
        )
        return grads, sums

    return gradients


def make_train_step(
    graphdef: nnx.GraphDef,
    rest: nnx.State,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    options: StepOptions,
) -> StepFn:
    """A pure ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    A step whose loss or gradient norm is not finite leaves params and optimizer
    state unchanged; ``metrics["finite"]`` tells the host loop (which decides whether
    to skip or stop).
    """
    gradients = make_gradient_fn(graphdef, rest, options)

    def step(params, opt_state, batch: Batch):
        grads, sums = gradients(params, batch)
        metrics = loss_lib.loss_metrics(sums, options.z_loss_coef)
        grad_norm = optax.global_norm(grads)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        new_params = jax.tree.map(keep, new_params, params)
        new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        metrics.update(
            grad_norm=grad_norm,
            learning_rate=_learning_rate(schedule, opt_state),
            finite=finite,
        )
        return new_params, new_opt_state, metrics

    return step


def check_batch_size(batch_size: int, mesh: Mesh, grad_accum_steps: int) -> None:
    """Raises ValueError unless every micro-batch splits evenly over the batch axes."""
    parallel = sharding.batch_shard_count(mesh)
    if batch_size % (parallel * grad_accum_steps):
        raise ValueError(
            f"data.batch_size {batch_size} must be a multiple of the {parallel} batch-parallel "
            f"devices x train.grad_accum_steps {grad_accum_steps}"
        )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over the data-parallel axes, sequence replicated."""
    return NamedSharding(mesh, sharding.logical_to_spec(("batch", "activation_length"), mesh=mesh))


def jit_train_step(
    step: StepFn,
    param_shardings: Any,
    opt_shardings: Any,
    mesh: Mesh,
    donate: bool = True,
) -> Callable:
    """``jax.jit`` with explicit input and output shardings (metrics replicated)."""
    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = batch_sharding(mesh)
    return jax.jit(
        step,
        in_shardings=(param_shardings, opt_shardings, {k: rows for k in BATCH_KEYS}),
        out_shardings=(param_shardings, opt_shardings, replicated),
        donate_argnums=(0, 1) if donate else (),
    )
