"""VQGAN training losses and metrics (pure functions on float images in [-1, 1])."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction_loss(x: jax.Array, x_rec: jax.Array, l1_weight: float, l2_weight: float) -> jax.Array:
    """Weighted mean absolute plus mean squared error."""
    d = (x_rec - x).astype(jnp.float32)
    return l1_weight * jnp.mean(jnp.abs(d)) + l2_weight * jnp.mean(jnp.square(d))


def quantization_losses(z: jax.Array, zq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codebook loss |sg(z) - e|^2, commitment loss |z - sg(e)|^2), both means."""
    sg = jax.lax.stop_gradient
    return jnp.mean(jnp.square(sg(z) - zq)), jnp.mean(jnp.square(z - sg(zq)))


def straight_through(z: jax.Array, zq: jax.Array) -> jax.Array:
    """zq in the forward pass, identity gradient to z in the backward pass."""
    return z + jax.lax.stop_gradient(zq - z)


def hinge_discriminator_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def generator_adversarial_loss(logits_fake: jax.Array) -> jax.Array:
    return -jnp.mean(logits_fake)


def psnr(x: jax.Array, x_rec: jax.Array) -> jax.Array:
    """Per-image PSNR in dB of images in [-1, 1] (compared on the [0, 1] scale, clipped)."""
    a = (jnp.clip(x, -1, 1) + 1) / 2
    b = (jnp.clip(x_rec, -1, 1) + 1) / 2
    mse = jnp.mean(jnp.square(a - b), axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def code_histogram(codes: jax.Array, num_image_codes: int) -> jax.Array:
    """Counts of each code (float32 [num_image_codes])."""
    return jnp.zeros((num_image_codes,), jnp.float32).at[codes.reshape(-1)].add(1.0)


def perplexity(counts: jax.Array) -> jax.Array:
    """exp(entropy) of the code distribution given by ``counts``."""
    p = counts / jnp.maximum(counts.sum(), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
