"""Fused causal flash attention for GPUs (Pallas Triton), forward and backward.

Adapted from ``jax.experimental.pallas.ops.gpu.attention`` (Apache-2.0), whose ``mha``
has causal masking and segment ids only. This version adds what the decoders here need:
grouped-query and multi-query heads (key/value head ``h // groups`` is read in place,
never repeated), Gemma 2's sliding window (blocks wholly outside it are skipped) and its
attention-logit soft-cap (``cap * tanh(logits / cap)``, differentiated in the backward
kernel). Masks are by index: query t attends key s when s <= t, both share a segment id
and, with ``window``, t - s < window. Softmax runs in base 2, as in the original.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
LOG2E = math.log2(math.e)
BLOCKS = (128, 64, 32, 16)  # Triton's dot needs tiles of at least 16
MIN_BLOCK = BLOCKS[-1]
BACKWARD_BLOCK = 32  # the backward kernel keeps more tiles live: smaller tiles


def fits(length: int) -> bool:
    """Whether rows of ``length`` tokens split into whole blocks."""
    return length >= MIN_BLOCK and length % MIN_BLOCK == 0


def _block(length: int, largest: int) -> int:
    return next(b for b in BLOCKS if b <= largest and length % b == 0)


@dataclasses.dataclass(frozen=True)
class _Options:
    scale: float
    window: int | None
    softcap: float | None
    block_q: int
    block_k: int
    block_bwd: int
    head_dim: int
    groups: int
    interpret: bool


def flash_attention(
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

    ``block`` caps the tile size (default 128, or 64 for head_dim > 128); T must be a
    multiple of ``MIN_BLOCK``. ``interpret`` runs the kernels in Pallas interpret mode
    (any backend; slow). Returns [B, T, H, Dh] in q's dtype.
    """
    b, t, h, dh = q.shape
    if not fits(t):
        raise ValueError(f"flash_gpu attention needs a row length that is a multiple of {MIN_BLOCK}, got {t}")
    if k.shape != v.shape or k.shape[:2] != (b, t) or k.shape[3] != dh or h % k.shape[2]:
        raise ValueError(f"flash_gpu attention: q {q.shape} does not match k {k.shape} / v {v.shape}")
    largest = block or (128 if dh <= 128 else 64)
    options = _Options(
        scale=float(scale), window=window, softcap=softcap, block_q=_block(t, largest),
        block_k=_block(t, largest), block_bwd=_block(t, min(largest, BACKWARD_BLOCK)),
        head_dim=dh, groups=h // k.shape[2], interpret=interpret,
    )
    return _flash(q, k, v, segment_ids.astype(jnp.int32), options)


def _logits(qk: jax.Array, o: _Options) -> tuple[jax.Array, jax.Array | None]:
    """Scaled (and soft-capped) logits in natural units, and tanh of the cap (or None)."""
    s = qk * o.scale
    if o.softcap is None:
        return s, None
    t = jnp.tanh(s / o.softcap)
    return t * o.softcap, t


def _mask(span_q, span_k, q_segments, k_segments, window):
    mask = (span_q[:, None] >= span_k[None, :]) & (q_segments[:, None] == k_segments[None, :])
    if window is not None:
        mask &= span_q[:, None] - span_k[None, :] < window
    return mask


def _first_key_block(q_start, block_k: int, window: int | None):
    """The first key block a query block starting at ``q_start`` can see."""
    if window is None:
        return 0
    return lax.div(jnp.maximum(q_start - window + 1, 0), block_k)


def _forward_kernel(q_ref, k_ref, v_ref, seg_ref, o_ref, lse_ref, *, o: _Options):
    block_q, block_k = o.block_q, o.block_k
    start_q = pl.program_id(0)
    head_mask = (jnp.arange(q_ref.shape[-1]) < o.head_dim)[None, :]
    q = plgpu.load(q_ref, mask=head_mask, other=0.0)
    span_q = start_q * block_q + jnp.arange(block_q)
    q_segments = seg_ref[pl.ds(start_q * block_q, block_q)]

    def body(start_k, carry):
        acc, m_prev, l_prev = carry
        k_slice = pl.ds(start_k * block_k, block_k)
        k = plgpu.load(k_ref.at[k_slice, :], mask=head_mask, other=0.0)
        s, _ = _logits(plgpu.dot(q, k.T), o)
        mask = _mask(span_q, start_k * block_k + jnp.arange(block_k), q_segments, seg_ref[k_slice], o.window)
        s = jnp.where(mask, s * LOG2E, MASK_VALUE)
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=-1))
        correction = jnp.exp2(m_prev - m_next)
        p = jnp.exp2(s - m_next[:, None])
        v = plgpu.load(v_ref.at[k_slice, :], mask=head_mask, other=0.0)
        acc = correction[:, None] * acc + plgpu.dot(p.astype(v.dtype), v)
        return acc, m_next, correction * l_prev + p.sum(axis=-1)

    carry = (
        jnp.zeros((block_q, q_ref.shape[-1]), jnp.float32),
        jnp.full((block_q,), -jnp.inf, jnp.float32),
        jnp.zeros((block_q,), jnp.float32),
    )
    first = _first_key_block(start_q * block_q, block_k, o.window)
    last = lax.div(block_q * (start_q + 1) + block_k - 1, block_k)
    acc, m, l = lax.fori_loop(first, last, body, carry)
    lse_ref[...] = m + jnp.log2(l)
    plgpu.store(o_ref.at[:, : acc.shape[-1]], (acc / l[:, None]).astype(o_ref.dtype), mask=head_mask)


def _forward(q, k, v, segment_ids, o: _Options):
    b, t, h, dh = q.shape
    padded = pl.next_power_of_2(dh)
    q_spec = pl.BlockSpec((None, o.block_q, None, padded), lambda i, j, n: (j, i, n, 0))
    kv_spec = pl.BlockSpec((None, t, None, padded), lambda i, j, n: (j, 0, n // o.groups, 0))
    out, lse = pl.pallas_call(
        functools.partial(_forward_kernel, o=o),
        grid=(t // o.block_q, b, h),
        in_specs=[q_spec, kv_spec, kv_spec, pl.BlockSpec((None, t), lambda i, j, n: (j, 0))],
        out_specs=[q_spec, pl.BlockSpec((None, None, o.block_q), lambda i, j, n: (j, n, i))],
        out_shape=[q, jax.ShapeDtypeStruct((b, h, t), jnp.float32)],
        compiler_params=plgpu.CompilerParams(num_warps=4 if dh <= 64 else 8, num_stages=2),
        interpret=o.interpret,
        name="flash_gpu_forward",
    )(q, k, v, segment_ids)
    return out, lse


def _backward_kernel(q_ref, k_ref, v_ref, seg_ref, do_ref, lse_ref, delta_ref,
                     dq_ref, dk_ref, dv_ref, *, o: _Options):
    """dk, dv of one key block (over the query blocks that see it), then dq of the
    query block with the same index (over the key blocks it sees)."""
    blk = o.block_bwd
    t = q_ref.shape[0]
    padded = q_ref.shape[-1]
    head_mask = (jnp.arange(padded) < o.head_dim)[None, :]
    index = pl.program_id(2)

    def grad_logits(q, k, v, do, span_q, span_k, q_segments, k_segments, lse, delta):
        """Probabilities p and d(loss)/d(raw scaled logits) of one tile."""
        s, capped = _logits(plgpu.dot(q, k.T), o)
        mask = _mask(span_q, span_k, q_segments, k_segments, o.window)
        p = jnp.exp2(jnp.where(mask, s * LOG2E, MASK_VALUE) - lse[:, None])
        ds = p * (plgpu.dot(do, v.T) - delta[:, None])
        if capped is not None:
            ds = ds * (1.0 - capped * capped)
        return p, ds * o.scale

    k_slice = pl.ds(index * blk, blk)
    k = plgpu.load(k_ref.at[k_slice, :], mask=head_mask, other=0.0)
    v = plgpu.load(v_ref.at[k_slice, :], mask=head_mask, other=0.0)
    span_k = index * blk + jnp.arange(blk)
    k_segments = seg_ref[k_slice]

    def dkdv_body(start_q, carry):
        dk, dv = carry
        q_slice = pl.ds(start_q * blk, blk)
        q = plgpu.load(q_ref.at[q_slice, :], mask=head_mask, other=0.0)
        do = plgpu.load(do_ref.at[q_slice, :], mask=head_mask, other=0.0)
        p, ds = grad_logits(q, k, v, do, start_q * blk + jnp.arange(blk), span_k,
                            seg_ref[q_slice], k_segments, lse_ref[q_slice], delta_ref[q_slice])
        dv = dv + plgpu.dot(p.astype(do.dtype).T, do)
        dk = dk + plgpu.dot(ds.astype(q.dtype).T, q)
        return dk, dv

    last_q = t // blk
    if o.window is not None:
        last_q = jnp.minimum(last_q, lax.div((index + 1) * blk + o.window - 2, blk) + 1)
    zeros = jnp.zeros((blk, padded), jnp.float32)
    dk, dv = lax.fori_loop(index, last_q, dkdv_body, (zeros, zeros))
    plgpu.store(dk_ref.at[:, : dk.shape[-1]], dk.astype(dk_ref.dtype), mask=head_mask)
    plgpu.store(dv_ref.at[:, : dv.shape[-1]], dv.astype(dv_ref.dtype), mask=head_mask)

    q_slice = pl.ds(index * blk, blk)
    q = plgpu.load(q_ref.at[q_slice, :], mask=head_mask, other=0.0)
    do = plgpu.load(do_ref.at[q_slice, :], mask=head_mask, other=0.0)
    span_q = index * blk + jnp.arange(blk)
    q_segments, lse, delta = seg_ref[q_slice], lse_ref[q_slice], delta_ref[q_slice]

    def dq_body(start_k, dq):
        k_slice = pl.ds(start_k * blk, blk)
        k = plgpu.load(k_ref.at[k_slice, :], mask=head_mask, other=0.0)
        v = plgpu.load(v_ref.at[k_slice, :], mask=head_mask, other=0.0)
        _, ds = grad_logits(q, k, v, do, span_q, start_k * blk + jnp.arange(blk),
                            q_segments, seg_ref[k_slice], lse, delta)
        return dq + plgpu.dot(ds.astype(k.dtype), k)

    first = _first_key_block(index * blk, blk, o.window)
    dq = lax.fori_loop(first, index + 1, dq_body, jnp.zeros((blk, padded), jnp.float32))
    plgpu.store(dq_ref.at[:, : dq.shape[-1]], dq.astype(dq_ref.dtype), mask=head_mask)


def _backward(o: _Options, residuals, do):
    q, k, v, segment_ids, out, lse = residuals
    b, t, h, dh = q.shape
    padded = pl.next_power_of_2(dh)
    delta = jnp.einsum("bthd,bthd->bht", out.astype(jnp.float32), do.astype(jnp.float32))
    row = pl.BlockSpec((None, t, None, padded), lambda i, n, _: (i, 0, n, 0))
    kv_row = pl.BlockSpec((None, t, None, padded), lambda i, n, _: (i, 0, n // o.groups, 0))
    stat = pl.BlockSpec((None, None, t), lambda i, n, _: (i, n, 0))
    tile = pl.BlockSpec((None, o.block_bwd, None, padded), lambda i, n, j: (i, j, n, 0))
    # dk, dv per query head in float32, summed over each key/value head's group below.
    per_head = jax.ShapeDtypeStruct((b, t, h, dh), jnp.float32)
    dq, dk, dv = pl.pallas_call(
        functools.partial(_backward_kernel, o=o),
        grid=(b, h, t // o.block_bwd),
        in_specs=[row, kv_row, kv_row, pl.BlockSpec((None, t), lambda i, n, _: (i, 0)), row, stat, stat],
        out_specs=[tile, tile, tile],
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), per_head, per_head],
        compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=2),
        interpret=o.interpret,
        name="flash_gpu_backward",
    )(q, k, v, segment_ids, do, lse, delta)
    kv_heads = k.shape[2]
    dk = dk.reshape(b, t, kv_heads, o.groups, dh).sum(3).astype(k.dtype)
    dv = dv.reshape(b, t, kv_heads, o.groups, dh).sum(3).astype(v.dtype)
    return dq, dk, dv, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, segment_ids, o: _Options):
    return _forward(q, k, v, segment_ids, o)[0]


def _flash_forward(q, k, v, segment_ids, o: _Options):
    out, lse = _forward(q, k, v, segment_ids, o)
    return out, (q, k, v, segment_ids, out, lse)


_flash.defvjp(_flash_forward, _backward)
