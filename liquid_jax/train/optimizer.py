"""AdamW with linear warm-up, cosine (or constant) decay and global-norm clipping.

Paper defaults: lr 2e-5, 3% warm-up, cosine decay, weight decay 0, clip 1.0 (0.5 for
7B+); the scaling runs use a constant lr. Betas and epsilon follow the Hugging Face
Trainer defaults the upstream recipe ran with.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

SCHEDULES = ("cosine", "constant")


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int) -> int:
    """``warmup_steps`` if set (>= 0), else ``warmup_fraction * total_steps``."""
    if config.get("warmup_steps", -1) >= 0:
        return int(config.warmup_steps)
    return int(round(config.warmup_fraction * total_steps))


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate``, then cosine to ``end_lr_fraction * lr``."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule {config.schedule!r}; expected one of {SCHEDULES}")
    peak = config.learning_rate
    warmup = warmup_steps(config, total_steps)
    if config.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * config.end_lr_fraction,
    )


def _is_matrix(leaf) -> bool:
    if isinstance(leaf, nnx.Variable):
        axes = leaf.get_metadata().get("logical_axes")
        if axes is not None:
            return sum(a != "layers" for a in axes) >= 2
    return jnp.ndim(leaf) >= 2


def decay_mask(params):
    """True for weight matrices and embeddings; norm scales and biases (vectors, also
    when stacked over a "layers" axis) are not decayed."""
    return jax.tree.map(_is_matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain and its learning-rate schedule (for logging)."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.grad_clip_norm and config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(
        optax.adamw(
            learning_rate=schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts), schedule
