"""Masks and grouped-query attention: the einsum reference and the one entry point to the
fused kernels (pure functions).

``attention`` runs causal self-attention within segments with an implementation chosen
by name (``TransformerConfig.attention``): "xla" (``dot_product_attention``, also what
decoding with a KV cache uses), "splash" (Pallas TPU kernels, ``splash.py``),
"flash_gpu" (Pallas Triton kernels, ``flash_gpu.py``) or "auto" (the kernel of the
platform, else xla). Off their accelerator the kernels run in Pallas interpret mode, on
CPU only (slow; for tests). Under a mesh they run in ``jax.shard_map`` over the batch and
head axes, split as the logical rules split them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from liquid_jax.model import flash_gpu, splash
from liquid_jax.model.config import ATTENTION_IMPLEMENTATIONS
from liquid_jax.sharding import logical_to_spec

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


KERNELS = {"splash": splash, "flash_gpu": flash_gpu}  # modules: fits(length), MIN_BLOCK
KERNEL_FUNCTIONS = {"splash": splash.splash_attention, "flash_gpu": flash_gpu.flash_attention}
KERNEL_PLATFORMS = {"splash": "tpu", "flash_gpu": "gpu"}


def current_platform() -> str:
    """The platform of the mesh in context (e.g. a TPU topology compiled ahead of time),
    else jax's default backend: "cpu", "gpu" or "tpu"."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.abstract_device is not None:
        platform = mesh.abstract_device.platform
    else:
        platform = jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform


def resolve_implementation(requested: str, length: int, platform: str | None = None) -> str:
    """The implementation that runs self-attention over rows of ``length`` tokens.

    "auto" is the platform's kernel ("splash" on TPU, "flash_gpu" on GPU) when the rows
    split into its blocks (multiples of 128 tokens for splash, of 16 for flash_gpu), and
    "xla" otherwise (CPU, other lengths). A kernel named explicitly must suit both the
    platform (its own, or CPU in interpret mode) and the length; else ValueError.
    """
    if requested not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"unknown attention {requested!r}; expected one of {ATTENTION_IMPLEMENTATIONS}")
    platform = platform or current_platform()
    if requested == "xla":
        return "xla"
    if requested == "auto":
        kernel = {kind: name for name, kind in KERNEL_PLATFORMS.items()}.get(platform)
        return kernel if kernel is not None and KERNELS[kernel].fits(length) else "xla"
    if platform not in (KERNEL_PLATFORMS[requested], "cpu"):
        raise ValueError(
            f"attention={requested!r} runs on {KERNEL_PLATFORMS[requested]} (or in interpret mode on cpu), "
            f"not on {platform}; set --config.model.attention=auto"
        )
    if not KERNELS[requested].fits(length):
        raise ValueError(
            f"attention={requested!r} needs rows whose length is a multiple of "
            f"{KERNELS[requested].MIN_BLOCK} tokens, got {length}; pad the rows "
            "(--config.data.seq_len) or set --config.model.attention=auto, which runs such rows with xla"
        )
    return requested


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    segment_ids: jax.Array,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    implementation: str = "auto",
    block: int | None = None,
) -> jax.Array:
    """Causal self-attention of q [B, T, H, Dh] over k, v [B, T, K, Dh] (H a multiple of K).

    Query t attends key s when s <= t, both have the same segment id [B, T] (0 marks
    padding: no real query attends it; padding queries get finite don't-care outputs)
    and, with ``window``, t - s < window. Masks are by index, which is masking by
    position wherever positions count up by one within a segment (packed rows and
    left-padded prompts). Logits are ``scale * q.k``, soft-capped as
    ``softcap * tanh(logits / softcap)``. ``block`` caps the kernels' tile size (tests).
    Returns [B, T, H, Dh] in v's dtype.
    """
    length = q.shape[1]
    implementation = resolve_implementation(implementation, length)
    if implementation == "xla":
        index = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), segment_ids.shape)
        mask = attention_mask(segment_ids, index, segment_ids, index, window)
        return dot_product_attention(q, k, v, mask, scale, softcap)
    kernel = functools.partial(
        KERNEL_FUNCTIONS[implementation],
        scale=scale, window=window, softcap=softcap, block=block,
        interpret=current_platform() != KERNEL_PLATFORMS[implementation],
    )
    return _on_mesh(kernel, q, k, v, segment_ids.astype(jnp.int32)).astype(v.dtype)


def _on_mesh(kernel: Callable, q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """``kernel(q, k, v, segment_ids)`` per shard: rows split like the logical "batch"
    axis, heads like "activation_heads" (a single key/value head is replicated; heads
    that cannot be split alike for queries and keys are not split)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return kernel(q, k, v, segment_ids)
    batch = logical_to_spec(("batch",), mesh=mesh, shape=q.shape[:1])[0]
    heads = logical_to_spec(("activation_heads",), mesh=mesh, shape=q.shape[2:3])[0]
    kv_heads = None
    if heads is not None and k.shape[2] > 1:
        split = int(np.prod([mesh.shape[a] for a in ((heads,) if isinstance(heads, str) else heads)]))
        if k.shape[2] % split:
            heads = None
        else:
            kv_heads = heads
    q_spec = jax.sharding.PartitionSpec(batch, None, heads, None)
    kv_spec = jax.sharding.PartitionSpec(batch, None, kv_heads, None)
    rows = jax.sharding.PartitionSpec(batch, None)
    # check_vma=False: pallas_call's outputs do not declare how they vary over the mesh.
    return jax.shard_map(
        kernel, in_specs=(q_spec, kv_spec, kv_spec, rows), out_specs=q_spec, check_vma=False
    )(q, k, v, segment_ids)


@dataclasses.dataclass(frozen=True)
class LayerMask:
    """Which keys one layer's queries attend, in the form its implementation reads.

    "xla": ``dense`` [B, T, S] (built by the caller; also covers a KV cache). A kernel:
    ``segment_ids`` [B, T] of the self-attended rows, and the sliding ``window`` where
    ``is_local`` (a bool, or a traced one when the layers run under ``jax.lax.scan``).
    """

    implementation: str
    dense: jax.Array | None = None
    segment_ids: jax.Array | None = None
    window: int | None = None
    is_local: bool | jax.Array = False


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: LayerMask, scale: float,
           softcap: float | None = None) -> jax.Array:
    """One layer's attention of q [B, T, H, Dh] over k, v [B, S, K, Dh] under ``mask``.

    A traced ``is_local`` compiles the kernel with and without the window and
    ``jax.lax.cond`` runs one (a kernel's mask must be static).
    """
    if mask.implementation == "xla":
        return dot_product_attention(q, k, v, mask.dense, scale, softcap)

    def run(window: int | None) -> jax.Array:
        return attention(q, k, v, segment_ids=mask.segment_ids, scale=scale, window=window,
                         softcap=softcap, implementation=mask.implementation)

    if mask.window is None:
        return run(None)
    if isinstance(mask.is_local, (bool, np.bool_)):
        return run(mask.window if mask.is_local else None)
    return jax.lax.cond(mask.is_local, lambda: run(mask.window), lambda: run(None))
