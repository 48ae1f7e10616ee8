"""The decoder: one configurable Flax NNX model for Gemma, Gemma 2, Llama 3 and Qwen2.

Layer parameters are always stacked over a leading "layers" axis, so ``scan_layers`` and
``remat`` change only how the forward pass is traced, never the checkpoint layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from liquid_jax.model.attention import MASKED_LOGIT, LayerMask, attention_mask, resolve_implementation
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model import remat
from liquid_jax.model.layers import Block, RMSNorm, stacked_param
from liquid_jax.model.rope import inverse_frequencies, rope_angles
from liquid_jax.sharding import constrain, state_shardings

def _prefill_implementation(requested: str, length: int) -> str:
    """A kernel for a prefill where it fits (prompt widths vary: others run xla)."""
    try:
        return resolve_implementation(requested, length)
    except ValueError:
        return "xla"


class Embedder(nnx.Module):
    """Token embedding table [padded_vocab, D]."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.embedding = stacked_param(
            rngs, config, None, (config.padded_vocab_size, config.d_model), ("vocab", "embed")
        )


class LMHead(nnx.Module):
    """Untied output projection, stored like an embedding table: [padded_vocab, D]."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.weight = stacked_param(
            rngs, config, None, (config.padded_vocab_size, config.d_model), ("vocab", "embed")
        )


class Transformer(nnx.Module):
    """Decoder-only language model.

    ``model(tokens, positions, segment_ids, cache)`` returns float32 logits
    [B, T, padded_vocab_size] (soft-capped; rows >= vocab_size masked) and the updated
    cache. segment_ids: 0 = padding; tokens attend only within their own segment.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = Embedder(config, rngs=rngs)
        self.layers = Block(config, rngs=rngs)
        self.final_norm = RMSNorm(config, None, rngs=rngs)
        self.lm_head = None if config.tie_embeddings else LMHead(config, rngs=rngs)

    def embedding_table(self) -> jax.Array:
        """The input embedding [padded_vocab, D]."""
        return self.embed.embedding[...]

    def lm_head_weight(self) -> jax.Array:
        """Output projection rows [padded_vocab, D] (the embedding when tied)."""
        return self.embedding_table() if self.lm_head is None else self.lm_head.weight[...]

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        h, cache = self.hidden_states(tokens, positions, segment_ids, cache)
        return self.project(h), cache

    def hidden_states(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: KVCache | None = None,
        layer_params: list[nnx.State] | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Final-normed hidden states [B, T, D] in the compute dtype, and the updated cache.

        Default positions are 0..T-1 (offset by the cache's write index when decoding);
        default segment ids are all 1. ``layer_params`` (from ``layer_params()``, computed
        outside a decode loop) replaces slicing the stacked layer weights on every call.
        With a cache, or without ``scan_layers``, the layers run unrolled.
        """
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        batch, length = tokens.shape
        if positions is None:
            start = 0 if cache is None else cache.index
            positions = jnp.broadcast_to(start + jnp.arange(length, dtype=jnp.int32), (batch, length))
        if segment_ids is None:
            segment_ids = jnp.ones((batch, length), jnp.int32)

        x = self.embedding_table()[tokens].astype(dtype)
        if cfg.scale_embeddings:
            x = x * jnp.asarray(np.sqrt(cfg.d_model), dtype)
        x = constrain(x, ("batch", "activation_length", "activation_embed"))
        cos, sin = rope_angles(positions, inverse_frequencies(cfg), dtype)

        local_flags = cfg.local_layer_flags()
        # A kernel masks by segment ids and index; the dense masks (xla, a KV cache with
        # earlier entries) by positions. A prefill into an empty cache attends only over
        # its own tokens, so it may use a kernel too.
        if cache is None:
            implementation = resolve_implementation(cfg.attention, length)
        else:
            implementation = _prefill_implementation(cfg.attention, length) if cache.empty else "xla"
        if implementation == "xla":
            if cache is None:
                key_segments, key_positions = segment_ids, positions
            else:
                cache = cache.write_metadata(segment_ids, positions)
                key_segments, key_positions = cache.segment_ids, cache.positions
            global_mask = attention_mask(segment_ids, positions, key_segments, key_positions)
            local_mask = None
            if any(local_flags):
                local_mask = attention_mask(
                    segment_ids, positions, key_segments, key_positions, cfg.sliding_window
                )

            def layer_mask(is_local) -> LayerMask:
                dense = global_mask if local_mask is None else jnp.where(is_local, local_mask, global_mask)
                return LayerMask("xla", dense=dense)
        else:
            if cache is not None:
                cache = cache.write_metadata(segment_ids, positions)
            window = cfg.sliding_window if any(local_flags) else None

            def layer_mask(is_local) -> LayerMask:
                return LayerMask(implementation, segment_ids=segment_ids, window=window, is_local=is_local)

        index = None if cache is None else cache.index
        graphdef, layer_state = nnx.split(self.layers)

        def layer(x, per_layer):
            state, is_local, kv = per_layer
            return nnx.merge(graphdef, state)(x, cos, sin, layer_mask(is_local), kv, index)

        if cfg.remat != "none":
            # CSE prevention is only needed outside scan (jax.checkpoint docs).
            layer = jax.checkpoint(
                layer, policy=remat.POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers
            )
        if cache is None and cfg.scan_layers:
            x, _ = jax.lax.scan(layer, x, (layer_state, jnp.asarray(local_flags), None))
        else:
            # With a cache the layers run unrolled, each on its own cache arrays.
            if layer_params is None:
                layer_params = self.layer_params()
            written = []
            for i, state in enumerate(layer_params):
                x, kv = layer(x, (state, local_flags[i], None if cache is None else (cache.k[i], cache.v[i])))
                written.append(kv)
            if cache is not None:
                k, v = zip(*written)
                cache = dataclasses.replace(cache, k=k, v=v, index=cache.index + length)
        return self.final_norm(x), cache

    def layer_params(self) -> list[nnx.State]:
        """Each layer's parameters sliced out of the stacked ones.

        XLA's CPU backend copies a slice of a stacked weight at every use, so a decode
        loop that slices inside its body copies all weights on every step; slicing once
        before the loop avoids that at the cost of one extra copy of the layer weights.
        """
        state = nnx.state(self.layers)
        return [jax.tree.map(lambda a: a[i], state) for i in range(self.config.num_layers)]

    def head_rows(self, vocab_start: int = 0, vocab_end: int | None = None) -> jax.Array:
        """LM-head rows [vocab_start, vocab_end) [rows, D], validated against the padded vocabulary."""
        vocab_end = self.config.padded_vocab_size if vocab_end is None else vocab_end
        if not 0 <= vocab_start < vocab_end <= self.config.padded_vocab_size:
            raise ValueError(
                f"vocabulary slice [{vocab_start}, {vocab_end}) is outside [0, {self.config.padded_vocab_size})"
            )
        return self.lm_head_weight()[vocab_start:vocab_end]

    def project(
        self, h: jax.Array, vocab_start: int = 0, vocab_end: int | None = None, head: jax.Array | None = None
    ) -> jax.Array:
        """float32 logits [..., vocab_end - vocab_start] of LM-head rows [vocab_start, vocab_end).

        Final soft-capping is applied; rows at or beyond ``vocab_size`` (padding) get a
        large negative logit so they are never sampled. ``head`` is ``head_rows(vocab_start,
        vocab_end)`` when the caller sliced it already (outside a decode loop).
        """
        cfg = self.config
        vocab_end = cfg.padded_vocab_size if vocab_end is None else vocab_end
        if head is None:
            head = self.head_rows(vocab_start, vocab_end)
        weight = head.astype(h.dtype)
        logits = jnp.einsum("...d,vd->...v", h, weight, preferred_element_type=jnp.float32)
        if cfg.final_logit_softcap is not None:
            logits = jnp.tanh(logits / cfg.final_logit_softcap) * cfg.final_logit_softcap
        if vocab_end > cfg.vocab_size:
            rows = jnp.arange(vocab_start, vocab_end)
            logits = jnp.where(rows < cfg.vocab_size, logits, MASKED_LOGIT)
        if logits.ndim == 3:
            logits = constrain(logits, ("batch", "activation_length", "activation_vocab"))
        return logits


def abstract_model(config: TransformerConfig) -> Transformer:
    """The model with ShapeDtypeStruct parameters: nothing is allocated."""
    return nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))


def param_count(config: TransformerConfig, include_padding: bool = False) -> int:
    """Number of parameters, computed abstractly; padded vocabulary rows excluded by default."""
    state = nnx.state(abstract_model(config), nnx.Param)
    total = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state))
    if not include_padding:
        tables = 1 if config.tie_embeddings else 2
        total -= tables * (config.padded_vocab_size - config.vocab_size) * config.d_model
    return total


def from_params(
    config: TransformerConfig, params: dict[str, Any], mesh: jax.sharding.Mesh | None = None
) -> Transformer:
    """A model holding ``params`` (a nested dict shaped like ``nnx.state(model)``).

    Arrays are cast to ``config.param_dtype``; with ``mesh`` they are placed with the
    shardings from their logical axes. Raises ValueError on a missing, extra or
    wrongly shaped entry.
    """
    graphdef, state = nnx.split(abstract_model(config))
    expected = nnx.to_pure_dict(state)
    _check_tree(expected, params, "")
    dtype = jnp.dtype(config.param_dtype)

    def place(value, sharding=None):
        value = value.astype(dtype) if isinstance(value, jax.Array) else np.asarray(value, dtype)
        return jnp.asarray(value) if sharding is None else jax.device_put(value, sharding)

    if mesh is None:
        values = jax.tree.map(place, params)
    else:
        values = jax.tree.map(place, params, nnx.to_pure_dict(state_shardings(state, mesh)))
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def _check_tree(expected: Any, actual: Any, where: str) -> None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise ValueError(f"params{where}: expected a dict, got {type(actual).__name__}")
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        if missing or extra:
            raise ValueError(f"params{where}: missing keys {missing}, unexpected keys {extra}")
        for key in expected:
            _check_tree(expected[key], actual[key], f"{where}.{key}")
    elif tuple(np.shape(actual)) != tuple(expected.shape):
        raise ValueError(f"params{where}: expected shape {tuple(expected.shape)}, got {np.shape(actual)}")
