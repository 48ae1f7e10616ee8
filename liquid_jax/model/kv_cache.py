"""Key/value cache for incremental decoding, a plain pytree (no NNX state)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from liquid_jax.model.config import TransformerConfig
from liquid_jax.sharding import constrain


def cache_axes(config: TransformerConfig) -> tuple[str | None, ...]:
    """Logical axes of one layer's k and v; a single (multi-query) KV head is replicated."""
    heads = "cache_kv_heads" if config.num_kv_heads > 1 else None
    return ("cache_batch", heads, "cache_length", "cache_head_dim")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer for ``max_len`` slots per row.

    k, v: one array [B, kv_heads, S, head_dim] per layer, in the compute dtype (rotary
    already applied to k). Separate per-layer arrays are written in place and read by
    attention without a slice (a slice of a stacked cache is a copy on XLA's CPU
    backend), and heads before slots is the layout attention reads. segment_ids [B, S] int32: 0 marks an empty or padding slot, which is never
    attended to. positions [B, S] int32: the position each slot was written with (masks
    and the sliding window compare positions). index: int32 scalar, the next slot to write;
    a call with T tokens writes slots [index, index + T) of every row. Writes past
    ``max_len`` are clamped by ``dynamic_update_slice``, so callers size the cache for the
    whole generation.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    positions: jax.Array
    index: jax.Array

    @classmethod
    def init(cls, config: TransformerConfig, batch: int, max_len: int, dtype: Any = None) -> "KVCache":
        """An empty cache (all slots segment 0) for ``batch`` rows of ``max_len`` slots."""
        dtype = jnp.dtype(dtype or config.dtype)
        shape = (batch, config.num_kv_heads, max_len, config.head_dim)

        def empty() -> tuple[jax.Array, ...]:
            return tuple(constrain(jnp.zeros(shape, dtype), cache_axes(config)) for _ in range(config.num_layers))

        return cls(
            k=empty(),
            v=empty(),
            segment_ids=jnp.zeros((batch, max_len), jnp.int32),
            positions=jnp.zeros((batch, max_len), jnp.int32),
            index=jnp.zeros((), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def write_metadata(self, segment_ids: jax.Array, positions: jax.Array) -> "KVCache":
        """Records segment ids and positions [B, T] at the write index (k, v unchanged)."""
        at = (0, self.index)
        return dataclasses.replace(
            self,
            segment_ids=jax.lax.dynamic_update_slice(self.segment_ids, segment_ids.astype(jnp.int32), at),
            positions=jax.lax.dynamic_update_slice(self.positions, positions.astype(jnp.int32), at),
        )


def write_layer(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array, index: jax.Array):
    """Writes one layer's new keys/values [B, T, K, Dh] into its slots [B, K, S, Dh] at index."""
    at = (0, 0, index, 0)

    def write(cache: jax.Array, new: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_slice(cache, jnp.swapaxes(new, 1, 2).astype(cache.dtype), at)

    return write(cache_k, k), write(cache_v, v)
