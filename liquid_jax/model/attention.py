"""Masks and grouped-query dot-product attention (pure functions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Logit for masked entries: finite so fully masked rows (padding queries) stay NaN-free,
# and far below any real logit.
MASKED_LOGIT = float(jnp.finfo(jnp.float32).min) / 2


def attention_mask(
    q_segments: jax.Array,
    q_positions: jax.Array,
    k_segments: jax.Array,
    k_positions: jax.Array,
    window: int | None = None,
) -> jax.Array:
    """Boolean [B, T, S]: query t may attend key s.

    Keys must share the query's segment id, be non-padding (segment != 0) and not lie in
    the future by position; with ``window``, also be fewer than ``window`` positions back.
    """
    qs, qp = q_segments[:, :, None], q_positions[:, :, None]
    ks, kp = k_segments[:, None, :], k_positions[:, None, :]
    mask = (qs == ks) & (ks != 0) & (kp <= qp)
    if window is not None:
        mask &= qp - kp < window
    return mask


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    scale: float,
    softcap: float | None = None,
) -> jax.Array:
    """Attention of q [B, T, H, Dh] over k, v [B, S, K, Dh] (H a multiple of K).

    Query head h reads key/value head h // (H // K). Logits and softmax are float32;
    the result [B, T, H, Dh] has v's dtype. The G = H // K query heads that share a
    key/value head are stacked along the query axis ([B, K, G * T, Dh]), so both
    products are plain batched matmuls without repeating k and v.
    """
    b, t, h, dh = q.shape
    kv_heads = k.shape[2]
    groups = h // kv_heads
    q = q.reshape(b, t, kv_heads, groups, dh).transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, groups * t, dh)
    logits = jnp.einsum("bkqd,bskd->bkqs", q, k, preferred_element_type=jnp.float32) * scale
    logits = logits.reshape(b, h, t, -1)
    if softcap is not None:
        logits = jnp.tanh(logits / softcap) * softcap
    logits = jnp.where(mask[:, None, :, :], logits, MASKED_LOGIT)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype).reshape(b, kv_heads, groups * t, -1)
    out = jnp.einsum("bkqs,bskd->bkqd", probs, v).reshape(b, kv_heads, groups, t, dh)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, dh)
