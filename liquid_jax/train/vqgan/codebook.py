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
    """Re-initialises codes whose usage is below ``threshold`` from latents ``z``.

    Each dead code takes a latent drawn with probability proportional to its squared
    distance from the nearest live code (k-means++ seeding), so new codes go where the
    codebook fits worst. Uniform draws would mostly land on the commonest latents (a flat
    background) and split them over many codes that carry no information.
    Returns (embedding, dead mask). A little noise keeps restarted codes distinct.
    """
    z = z.reshape(-1, z.shape[-1]).astype(jnp.float32)
    dead = usage < threshold
    live = embedding.astype(jnp.float32)
    distances = (jnp.sum(z * z, -1, keepdims=True) - 2 * z @ live.T + jnp.sum(live * live, -1))
    nearest = jnp.min(jnp.where(dead[None, :], jnp.inf, distances), axis=-1)
    # With no live code every latent is equally far; take them uniformly.
    error = jnp.where(jnp.isfinite(nearest), jnp.maximum(nearest, 0.0), 1.0)
    logits = jnp.where(error.sum() > 0, jnp.log(error), 0.0)
    pick = jax.random.categorical(key, logits, shape=(embedding.shape[0],))
    noise = 0.01 * jnp.std(z) * jax.random.normal(jax.random.fold_in(key, 1), embedding.shape)
    fresh = (z[pick] + noise).astype(embedding.dtype)
    return jnp.where(dead[:, None], fresh, embedding), dead
