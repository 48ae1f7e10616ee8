"""Causal self-attention through Pallas splash attention (TPU kernels).

One ``make_splash_mha`` kernel per call covers multi-head, grouped-query and multi-query
heads: its key/value index map reads key/value head ``h // (H // K)`` in place and its
backward kernel accumulates dk, dv over each group, so keys and values are never
repeated (``make_splash_mqa`` would cover only K == 1). Masks: ``CausalMask``, or
``LocalMask`` for Gemma 2's sliding window, and'ed with segment ids; the soft-cap is the
kernel's ``attn_logits_soft_cap``. Rows run through ``jax.vmap`` (the kernel takes one
row [heads, T, Dh]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

BLOCKS = (512, 256, 128)  # the kernel needs key blocks of whole 128-lane vregs
MIN_BLOCK = BLOCKS[-1]


def fits(length: int) -> bool:
    """Whether rows of ``length`` tokens split into whole blocks."""
    return length >= MIN_BLOCK and length % MIN_BLOCK == 0


def splash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    segment_ids: jax.Array,
    *,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    block: int | None = None,
    interpret: bool = False,
) -> jax.Array:
    """Causal attention of q [B, T, H, Dh] over k, v [B, T, K, Dh] within segments [B, T].

    Query t attends key s when s <= t, both share a segment id and, with ``window``,
    t - s < window. ``block`` caps the tile size (default 512); T must be a multiple of
    ``MIN_BLOCK``. ``interpret`` runs the kernel in Pallas interpret mode (any backend;
    slow). Returns [B, T, H, Dh] in q's dtype.
    """
    b, t, h, dh = q.shape
    if not fits(t):
        raise ValueError(f"splash attention needs a row length that is a multiple of {MIN_BLOCK}, got {t}")
    if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != dh or h % k.shape[2]:
        raise ValueError(f"splash attention: q {q.shape} does not match k {k.shape} / v {v.shape}")
    size = next(s for s in BLOCKS if s <= (block or BLOCKS[0]) and t % s == 0)
    if window is None:
        mask = masks.CausalMask((t, t))
    else:
        mask = masks.LocalMask((t, t), window_size=(window - 1, 0), offset=0)
    kernel = kernels.make_splash_mha(
        masks.MultiHeadMask([mask] * h),
        block_sizes=kernels.BlockSizes(
            block_q=size, block_kv=size, block_kv_compute=size,
            block_q_dkv=size, block_kv_dkv=size, block_kv_dkv_compute=size,
            block_q_dq=size, block_kv_dq=size,
        ),
        attn_logits_soft_cap=softcap,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )
    # The kernel does not scale logits: scale q (before the soft-cap, as the reference does).
    q = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    segment_ids = segment_ids.astype(jnp.int32)
    out = jax.vmap(kernel)(q, k, v, kernels.SegmentIds(q=segment_ids, kv=segment_ids))
    return out.transpose(0, 2, 1, 3)
