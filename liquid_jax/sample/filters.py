"""Logit filters and the token choice: temperature, top-k, top-p, greedy or sampled.

The filters follow Hugging Face's ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
``TopPLogitsWarper`` (each keeps at least one token), applied in that order, which is
also the order of upstream Liquid's sampler.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen from a row of logits.

    ``greedy`` takes the arg-max and ignores the other fields. Otherwise logits are
    divided by ``temperature``, restricted to the ``top_k`` largest (0 = no limit) and
    to the smallest set whose probability reaches ``top_p`` (1.0 = no limit), and a
    token is drawn from the renormalised distribution.
    """

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.greedy:
            if not self.temperature > 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
            if self.top_k < 0:
                raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


GREEDY = SamplingParams(greedy=True)


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Sets every logit below the k-th largest of its row to -inf (ties with it stay)."""
    k = min(k, logits.shape[-1])
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth_largest, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Keeps the most probable tokens whose total probability first exceeds ``p``.

    Tokens are sorted by ascending logit; those whose cumulative probability is still
    <= 1 - p are removed, the largest one never is.
    """
    order = jnp.argsort(logits, axis=-1, stable=True)
    ascending = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
    remove_sorted = cumulative <= 1.0 - p
    remove_sorted = remove_sorted.at[..., -1].set(False)
    rows = jnp.arange(logits.shape[0])[:, None]
    remove = jnp.zeros_like(remove_sorted).at[rows, order].set(remove_sorted)
    return jnp.where(remove, -jnp.inf, logits)


def filter_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """Temperature, then top-k, then top-p, on f32 logits of shape [batch, vocab]."""
    logits = logits.astype(jnp.float32) / params.temperature
    if params.top_k > 0:
        logits = top_k_filter(logits, params.top_k)
    if params.top_p < 1.0:
        logits = top_p_filter(logits, params.top_p)
    return logits


def choose_tokens(logits: jax.Array, key: jax.Array, params: SamplingParams) -> jax.Array:
    """One token index per row of ``logits`` [batch, vocab] -> int32 [batch]."""
    if params.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, params)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)
