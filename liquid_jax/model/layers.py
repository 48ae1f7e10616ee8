"""Decoder building blocks whose parameters are stacked over a leading "layers" axis.

Each module is created once for all layers (parameters [L, ...]); its ``__call__`` runs
one layer and expects a per-layer view (see ``Transformer``), where the leading axis has
been sliced away.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from liquid_jax.model import remat
from liquid_jax.model.attention import LayerMask, attend
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.kv_cache import write_layer
from liquid_jax.model.rope import apply_rope
from liquid_jax.sharding import constrain, logical_param

KV = tuple[jax.Array, jax.Array]  # one layer's cached keys and values [B, K, S, Dh]
INIT_STDDEV = 0.02  # Hugging Face initializer_range for every family here


def stacked_param(
    rngs: nnx.Rngs | None,
    config: TransformerConfig,
    layers: int | None,
    shape: Sequence[int],
    axes: Sequence[str | None],
    fill: float | None = None,
) -> nnx.Param:
    """A parameter of ``shape`` (with a leading [layers] axis when ``layers``), random
    normal(0.02) or filled with ``fill``."""
    if layers is not None:
        shape, axes = (layers, *shape), ("layers", *axes)
    dtype = jnp.dtype(config.param_dtype)
    if fill is None:
        value = jax.random.normal(rngs.params(), tuple(shape), dtype) * INIT_STDDEV
    else:
        value = jnp.full(tuple(shape), fill, dtype)
    return logical_param(value, axes)


class RMSNorm(nnx.Module):
    """RMSNorm in float32; Gemma scales by (1 + w) before the cast, Llama/Qwen by w after it."""

    def __init__(self, config: TransformerConfig, layers: int | None, *, rngs: nnx.Rngs):
        self.plus_one = config.norm_plus_one
        self.eps = config.norm_eps
        self.scale = stacked_param(
            rngs, config, layers, (config.d_model,), ("norm",), fill=0.0 if self.plus_one else 1.0
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...]
        if self.plus_one:
            return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)
        return scale.astype(x.dtype) * normed.astype(x.dtype)


class Projection(nnx.Module):
    """A dense layer: its (stacked) kernel [*in, *out] contracts the trailing ``in_dims``
    dims of the input; an optional bias is added over the out dims.

    The input and kernel are flattened to one 2-D matmul, whose gradients are plain
    matmuls too (batched-dims einsums make XLA:CPU transpose activations).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layers: int,
        kernel_shape: Sequence[int],
        kernel_axes: Sequence[str],
        in_dims: int = 1,
        bias_dims: int = 0,
        *,
        rngs: nnx.Rngs,
    ):
        self.in_dims = in_dims
        self.kernel = stacked_param(rngs, config, layers, kernel_shape, kernel_axes)
        if bias_dims:
            self.bias = stacked_param(
                rngs, config, layers, kernel_shape[-bias_dims:], kernel_axes[-bias_dims:], fill=0.0
            )
        else:
            self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(x.dtype)
        in_shape, out_shape = kernel.shape[: self.in_dims], kernel.shape[self.in_dims :]
        lead = x.shape[: x.ndim - self.in_dims]
        y = jnp.dot(x.reshape(-1, math.prod(in_shape)), kernel.reshape(math.prod(in_shape), -1))
        y = y.reshape(*lead, *out_shape)
        if self.bias is not None:
            y = y + self.bias[...].astype(x.dtype)
        return y


class Attention(nnx.Module):
    """Multi-head / grouped-query / multi-query self-attention with rotary embeddings."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        d, h, kv, dh, n = (config.d_model, config.num_heads, config.num_kv_heads,
                           config.head_dim, config.num_layers)
        bias = 2 if config.qkv_bias else 0
        # A single (multi-query) KV head cannot be split over the tensor axis: replicate it.
        kv_axis = "kv_heads" if kv > 1 else None
        self.kv_activation_axis = "activation_kv_heads" if kv > 1 else None
        q_axes, kv_axes = ("embed", "q_heads", "head_dim"), ("embed", kv_axis, "head_dim")
        self.q_proj = Projection(config, n, (d, h, dh), q_axes, bias_dims=bias, rngs=rngs)
        self.k_proj = Projection(config, n, (d, kv, dh), kv_axes, bias_dims=bias, rngs=rngs)
        self.v_proj = Projection(config, n, (d, kv, dh), kv_axes, bias_dims=bias, rngs=rngs)
        o_axes = ("q_heads", "head_dim", "embed")
        self.o_proj = Projection(config, n, (h, dh, d), o_axes, in_dims=2, rngs=rngs)
        self.scale = (config.query_pre_attn_scalar or config.head_dim) ** -0.5
        self.softcap = config.attn_logit_softcap

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: LayerMask,
        kv: KV | None = None, index: jax.Array | None = None,
    ) -> tuple[jax.Array, KV | None]:
        """x [B, T, D]; mask: this layer's ``LayerMask`` (with a cache, dense [B, T, S]);
        kv: this layer's cached (k, v) [B, K, S, Dh] or None; new keys/values are written
        at slot ``index``.

        Returns the output [B, T, D] and the updated (k, v) (None without a cache).
        """
        q_axes = ("batch", "activation_length", "activation_heads", None)
        kv_axes = ("batch", "activation_length", self.kv_activation_axis, None)
        q = checkpoint_name(constrain(self.q_proj(x), q_axes), remat.QUERY)
        k = checkpoint_name(constrain(self.k_proj(x), kv_axes), remat.KEY)
        v = checkpoint_name(constrain(self.v_proj(x), kv_axes), remat.VALUE)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            kv = write_layer(*kv, k, v, index)
            if mask.implementation == "xla":  # a kernel's prefill attends over its own k, v
                # Attention takes [B, S, K, Dh]; XLA folds this swap into its dot.
                k, v = jnp.swapaxes(kv[0], 1, 2), jnp.swapaxes(kv[1], 1, 2)
        out = checkpoint_name(attend(q, k, v, mask, self.scale, self.softcap), remat.CONTEXT)
        return checkpoint_name(self.o_proj(out), remat.OUT_PROJ), kv


class MLP(nnx.Module):
    """Gated feed-forward: down(act(gate(x)) * up(x)); GeGLU (tanh gelu) or SwiGLU."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        d, f, n = config.d_model, config.mlp_dim, config.num_layers
        self.gate_proj = Projection(config, n, (d, f), ("embed", "mlp"), rngs=rngs)
        self.up_proj = Projection(config, n, (d, f), ("embed", "mlp"), rngs=rngs)
        self.down_proj = Projection(config, n, (f, d), ("mlp", "embed"), rngs=rngs)
        self.activation = config.activation

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = checkpoint_name(self.gate_proj(x), remat.MLP_GATE)
        gate = jax.nn.gelu(gate, approximate=True) if self.activation == "gelu_tanh" else jax.nn.silu(gate)
        hidden = gate * checkpoint_name(self.up_proj(x), remat.MLP_UP)
        hidden = constrain(hidden, ("batch", "activation_length", "activation_mlp"))
        return checkpoint_name(self.down_proj(hidden), remat.MLP_OUT)


class Block(nnx.Module):
    """One pre-norm decoder layer; Gemma 2 adds post-attention / post-feed-forward norms."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        n = config.num_layers
        self.pre_attn_norm = RMSNorm(config, n, rngs=rngs)
        self.attn = Attention(config, rngs=rngs)
        self.pre_ffw_norm = RMSNorm(config, n, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)
        if config.post_norms:
            self.post_attn_norm = RMSNorm(config, n, rngs=rngs)
            self.post_ffw_norm = RMSNorm(config, n, rngs=rngs)
        else:
            self.post_attn_norm = self.post_ffw_norm = None

    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: LayerMask,
        kv: KV | None = None, index: jax.Array | None = None,
    ) -> tuple[jax.Array, KV | None]:
        """One layer on x [B, T, D]; arguments as for ``Attention``."""
        y, kv = self.attn(self.pre_attn_norm(x), cos, sin, mask, kv, index)
        if self.post_attn_norm is not None:
            y = self.post_attn_norm(y)
        x = x + y
        y = self.mlp(self.pre_ffw_norm(x))
        if self.post_ffw_norm is not None:
            y = self.post_ffw_norm(y)
        x = constrain(x + y, ("batch", "activation_length", "activation_embed"))
        return x, kv
