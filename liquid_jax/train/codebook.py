"""Codebook maintenance during VQGAN training: EMA updates and dead-code restarts."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_update(count: jax.Array, total: jax.Array, z: jax.Array, codes: jax.Array, decay: float,
               eps: float = 1e-5) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One exponential-moving-average codebook step (VQ-VAE, van den Oord et al. 2017).

    ``count`` [n] and ``total`` [n, d] are the running assignment counts and sums of
    latents; returns (count, total, embedding) with Laplace-smoothed counts.
    """
    n = count.shape[0]
    z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    codes = codes.reshape(-1)
    count = decay * count + (1 - decay) * jnp.zeros((n,), jnp.float32).at[codes].add(1.0)
    total = decay * total + (1 - decay) * jax.ops.segment_sum(z, codes, num_segments=n)
    mass = count.sum()
    smoothed = (count + eps) / (mass + n * eps) * mass
    return count, total, total / smoothed[:, None]


def restart_dead(embedding: jax.Array, usage: jax.Array, z: jax.Array, threshold: float,
                 key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Re-initialises codes whose usage is below ``threshold`` from random latents ``z``.

    Returns (embedding, dead mask). A little noise keeps restarted codes distinct.
    """
    z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    dead = usage < threshold
    pick = jax.random.randint(key, (embedding.shape[0],), 0, z.shape[0])
    noise = 0.01 * jnp.std(z) * jax.random.normal(jax.random.fold_in(key, 1), embedding.shape)
    fresh = (z[pick] + noise).astype(embedding.dtype)
    return jnp.where(dead[:, None], fresh, embedding), dead
