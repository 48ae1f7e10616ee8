"""Logit filters and the token choice: temperature, top-k, top-p, greedy or sampled.

The filters follow Hugging Face's ``TemperatureLogitsWarper``, ``TopKLogitsWarper`` and
``TopPLogitsWarper`` (each keeps at least one token), applied in that order, which is
also the order of upstream Liquid's sampler.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from liquid_jax.errors import UserError


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
            if not (math.isfinite(self.temperature) and self.temperature > 0):
                raise UserError(f"temperature must be a finite number > 0 when sampling (0: greedy), "
                                f"got {self.temperature}")
            if self.top_k < 0 or int(self.top_k) != self.top_k:
                raise UserError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k}")
            if not 0.0 < self.top_p <= 1.0:
                raise UserError(f"top_p must be in (0, 1], got {self.top_p}")


GREEDY = SamplingParams(greedy=True)


def _order_keys(x: jax.Array) -> jax.Array:
    """float32 -> uint32 keys in the same order (negative floats flipped below positive ones)."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _key_value(key: jax.Array) -> jax.Array:
    """The float32 whose ``_order_keys`` is ``key``."""
    bits = jnp.where(key >> 31 == 1, key ^ jnp.uint32(0x80000000), ~key)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _largest_where(holds, rows: tuple[int, ...], bits: int = 32) -> jax.Array:
    """Per row, the largest t in [0, 2**bits) with ``holds(t)`` (uint32 [..., 1]), by bisection.

    ``holds`` must be true at 0 and, once false, stay false for larger t. Each of the
    ``bits`` halvings costs one pass over the row, far less than a sort on a CPU.
    """
    lo = jnp.zeros(rows + (1,), jnp.uint32)
    hi = jnp.full(rows + (1,), 2**bits - 1, jnp.uint32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2 + (hi - lo) % 2
        ok = holds(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    return jax.lax.fori_loop(0, bits, halve, (lo, hi))[0]


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Sets every logit below the k-th largest of its row to -inf (ties with it stay)."""
    k = min(k, logits.shape[-1])
    keys = _order_keys(logits)
    kth_key = _largest_where(lambda t: jnp.sum(keys >= t, axis=-1, keepdims=True) >= k, logits.shape[:-1])
    return jnp.where(logits < _key_value(kth_key), -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Keeps the most probable tokens whose total probability first exceeds ``p``.

    A token is removed when the probability of it and every smaller logit is still
    <= 1 - p (Hugging Face's rule over the ascending sort); the largest logit never is.
    Exactly tied logits are kept or removed together, where Hugging Face's stable sort
    may split a tie at the boundary.
    """
    keys = _order_keys(logits)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    below = _largest_where(
        lambda t: jnp.sum(jnp.where(keys <= t, probs, 0.0), axis=-1, keepdims=True) <= 1.0 - p,
        logits.shape[:-1],
    )
    remove = (keys <= below) & (logits < jnp.max(logits, axis=-1, keepdims=True))
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
    return draw_tokens(key, filter_logits(logits, params))


def draw_tokens(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One index per row drawn from softmax(``logits``) [batch, vocab] -> int32 [batch].

    Inverts each row's cumulative distribution at one uniform number: the index is the
    number of tokens whose running total is <= u, found by bisection, so a step needs one
    random number per row instead of one per vocabulary entry.
    """
    vocab = logits.shape[-1]
    probs = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    u = jax.random.uniform(key, probs.shape[:-1] + (1,)) * jnp.sum(probs, axis=-1, keepdims=True)
    index = jnp.arange(vocab, dtype=jnp.uint32)
    before = _largest_where(
        lambda t: jnp.sum(jnp.where(index < t, probs, 0.0), axis=-1, keepdims=True) <= u,
        probs.shape[:-1],
        bits=int(vocab).bit_length(),
    )
    # u rounded up to the total leaves no token above it: take the last possible one.
    last = jnp.max(jnp.where(probs > 0, index, 0), axis=-1, keepdims=True)
    return jnp.minimum(before, last)[..., 0].astype(jnp.int32)
