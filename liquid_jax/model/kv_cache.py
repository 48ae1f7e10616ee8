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
    and the sliding window compare positions). index: the next slot to write, an int32
    scalar (every row) or [B] (each row its own, as speculative decoding advances rows by
    different amounts); a call with T tokens writes slots [index, index + T) of each row.
    Writes past ``max_len`` are clamped by ``dynamic_update_slice``, so callers size the
    cache for the whole generation. empty (static): nothing written yet, so the first
    call (the prefill) attends only over its own tokens and may use an attention kernel.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    positions: jax.Array
    index: jax.Array
    empty: bool = dataclasses.field(default=False, metadata=dict(static=True))

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
            empty=True,
        )

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def write_metadata(self, segment_ids: jax.Array, positions: jax.Array) -> "KVCache":
        """Records segment ids and positions [B, T] at the write index (k, v unchanged)."""
        return dataclasses.replace(
            self,
            segment_ids=_write_slots(self.segment_ids, segment_ids.astype(jnp.int32), self.index, 1),
            positions=_write_slots(self.positions, positions.astype(jnp.int32), self.index, 1),
            empty=False,
        )


def _write_slots(cache: jax.Array, new: jax.Array, index: jax.Array, axis: int) -> jax.Array:
    """``new`` written into ``cache`` from slot ``index`` along ``axis`` (batch is axis 0);
    a per-row index [B] writes each row at its own slot."""
    new = new.astype(cache.dtype)
    if jnp.ndim(index) == 0:
        at = [0] * cache.ndim
        at[axis] = index
        return jax.lax.dynamic_update_slice(cache, new, tuple(at))

    def row(c, n, i):
        at = [0] * c.ndim
        at[axis - 1] = i
        return jax.lax.dynamic_update_slice(c, n, tuple(at))

    return jax.vmap(row)(cache, new, index)


def write_layer(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array, index: jax.Array):
    """Writes one layer's new keys/values [B, T, K, Dh] into its slots [B, K, S, Dh] at
    ``index`` (a scalar, or one slot per row)."""
    return (_write_slots(cache_k, jnp.swapaxes(k, 1, 2), index, 2),
            _write_slots(cache_v, jnp.swapaxes(v, 1, 2), index, 2))
