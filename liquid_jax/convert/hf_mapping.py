"""Hugging Face transformers <-> liquid_jax: configs and parameter names/layouts.

Pure functions with no file IO: the checkpoint layer reads/writes safetensors on top of
these. Parameters are nested dicts of arrays shaped like ``nnx.state(Transformer)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from liquid_jax.model.config import SpecialTokens, TransformerConfig

ARCHITECTURES = {
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
_ROPE_SCALING_KEYS = (
    "rope_type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"
)
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_tanh", "gelu")  # Gemma's legacy "gelu" means tanh


# ----------------------------------------------------------------------------- configs


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> TransformerConfig:
    """A TransformerConfig from a transformers ``config.json`` dict.

    ``overrides`` replace fields afterwards (e.g. ``num_image_codes=8192`` for a Liquid
    checkpoint whose config.json does not record it, ``dtype``, ``scan_layers``).
    """
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture: model_type={model_type!r}, "
            f"architectures={hf_config.get('architectures')}; supported: {sorted(ARCHITECTURES)}"
        )
    hf = hf_config
    heads = hf["num_attention_heads"]
    rope_theta, rope_scaling = _rope_from_hf(hf)
    fields: dict[str, Any] = dict(
        family=model_type,
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        mlp_dim=hf["intermediate_size"],
        num_image_codes=hf.get("num_image_codes", 0),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=hf.get("max_position_embeddings", 8192),
        special_tokens=_special_tokens_from_hf(hf),
    )
    activation = hf.get("hidden_activation") or hf.get("hidden_act")
    if model_type in ("gemma", "gemma2"):
        _require(activation in _GELU_TANH + (None,), model_type, f"hidden activation {activation!r}")
        _require(not hf.get("attention_bias"), model_type, "attention_bias=True")
        fields.update(
            activation="gelu_tanh", scale_embeddings=True, norm_plus_one=True,
            tie_embeddings=hf.get("tie_word_embeddings", True),
        )
    else:
        _require(activation in ("silu", None), model_type, f"hidden_act {activation!r}")
        fields.update(activation="silu", tie_embeddings=hf.get("tie_word_embeddings", False))
    if model_type == "gemma2":
        fields.update(
            post_norms=True,
            attn_logit_softcap=hf.get("attn_logit_softcapping"),
            final_logit_softcap=hf.get("final_logit_softcapping"),
            query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
            sliding_window=hf.get("sliding_window"),
            sliding_window_pattern=2,
        )
        layer_types = hf.get("layer_types")
        if layer_types is not None and list(layer_types) != _gemma2_layer_types(fields["num_layers"]):
            raise ValueError(f"gemma2: layer_types {layer_types} differ from the sliding/full alternation")
    if model_type == "llama":
        _require(not hf.get("attention_bias") and not hf.get("mlp_bias"), "llama", "attention/mlp biases")
    if model_type == "qwen2":
        _require(not hf.get("use_sliding_window"), "qwen2", "use_sliding_window=True")
        fields.update(qkv_bias=True)
    return TransformerConfig(**fields).replace(**overrides)


def config_to_hf(config: TransformerConfig) -> dict[str, Any]:
    """A transformers ``config.json`` dict; vocab_size is the real (unpadded) vocabulary.

    Rotary settings are written both as ``rope_parameters`` (transformers 5) and as
    ``rope_theta``/``rope_scaling`` (older readers).
    """
    c = config
    tokens = c.special_tokens
    rope_parameters = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling:
        rope_parameters.update(dict(c.rope_scaling))
    hf: dict[str, Any] = {
        "architectures": [ARCHITECTURES[c.family]],
        "model_type": c.family,
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.mlp_dim,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": dict(c.rope_scaling) if c.rope_scaling else None,
        "rope_parameters": rope_parameters,
        "tie_word_embeddings": c.tie_embeddings,
        "bos_token_id": tokens.bos,
        "eos_token_id": tokens.eos,
        "pad_token_id": tokens.pad,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": c.param_dtype,
    }
    if c.num_image_codes:
        hf["num_image_codes"] = c.num_image_codes
    if c.family == "gemma":
        hf.update(hidden_act="gelu_pytorch_tanh", attention_bias=False)
    elif c.family == "gemma2":
        hf.update(
            hidden_activation="gelu_pytorch_tanh",
            attention_bias=False,
            query_pre_attn_scalar=_int_if_integral(c.query_pre_attn_scalar),
            sliding_window=c.sliding_window,
            layer_types=_gemma2_layer_types(c.num_layers),
            attn_logit_softcapping=c.attn_logit_softcap,
            final_logit_softcapping=c.final_logit_softcap,
        )
    elif c.family == "llama":
        hf.update(hidden_act="silu", attention_bias=False, mlp_bias=False)
    else:
        hf.update(
            hidden_act="silu", use_sliding_window=False, sliding_window=None,
            max_window_layers=c.num_layers,
        )
    return hf


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, tuple[tuple[str, Any], ...] | None]:
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise ValueError(f"unsupported rope scaling type {kind!r} in config (supported: default, llama3)")
    missing = [k for k in _ROPE_SCALING_KEYS[1:] if k not in params]
    if missing:
        raise ValueError(f"llama3 rope scaling is missing {missing}")
    scaling = {k: params[k] for k in _ROPE_SCALING_KEYS[1:]}
    return theta, tuple(sorted({"rope_type": "llama3", **scaling}.items()))


def _special_tokens_from_hf(hf: dict[str, Any]) -> SpecialTokens:
    """bos/eos/pad from the config (first eos if several; pad falls back to eos)."""
    default = SpecialTokens()
    bos, eos, pad = hf.get("bos_token_id"), hf.get("eos_token_id"), hf.get("pad_token_id")
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    eos = default.eos if eos is None else int(eos)
    return dataclasses.replace(
        default,
        bos=default.bos if bos is None else int(bos),
        eos=eos,
        pad=eos if pad is None else int(pad),
    )


def _int_if_integral(value: float | None) -> float | int | None:
    """transformers declares some float-valued fields as int (e.g. query_pre_attn_scalar)."""
    return int(value) if value is not None and float(value).is_integer() else value


def _gemma2_layer_types(num_layers: int) -> list[str]:
    return ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(num_layers)]


def _require(ok: bool, family: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{family}: {what} is not supported")


# ----------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class TensorMapping:
    """One Hugging Face tensor and where it lives in our parameter tree.

    kind says how the layouts differ:
      table      HF [vocab, D]      ours [padded_vocab, D] (zero rows appended)
      in_proj    HF [n * Dh, D]     ours [D, n, Dh]
      out_proj   HF [D, n * Dh]     ours [n, Dh, D]
      head_bias  HF [n * Dh]        ours [n, Dh]
      transpose  HF [out, in]       ours [in, out]
      copy       identical (norm scales)
    ``layer`` indexes the stacked leading axis of layer parameters (None otherwise).
    """

    hf_name: str
    path: tuple[str, ...]
    layer: int | None
    kind: str
    hf_shape: tuple[int, ...]


def hf_param_names(config: TransformerConfig) -> list[TensorMapping]:
    """Every tensor of the Hugging Face checkpoint, in the order transformers creates them."""
    c = config
    d, f, h, kv, dh = c.d_model, c.mlp_dim, c.num_heads, c.num_kv_heads, c.head_dim
    table = (c.vocab_size, d)
    out = [TensorMapping("model.embed_tokens.weight", ("embed", "embedding"), None, "table", table)]
    norms = [("input_layernorm", "pre_attn_norm")]
    if c.post_norms:
        norms += [
            ("post_attention_layernorm", "post_attn_norm"),
            ("pre_feedforward_layernorm", "pre_ffw_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ]
    else:
        norms += [("post_attention_layernorm", "pre_ffw_norm")]
    # (HF name within a layer, our path under "layers", kind, HF shape)
    per_layer = []
    for name, heads in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
        per_layer.append((f"self_attn.{name}.weight", ("attn", name, "kernel"), "in_proj", (heads * dh, d)))
        if c.qkv_bias:
            per_layer.append((f"self_attn.{name}.bias", ("attn", name, "bias"), "head_bias", (heads * dh,)))
    per_layer.append(("self_attn.o_proj.weight", ("attn", "o_proj", "kernel"), "out_proj", (d, h * dh)))
    for name, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)), ("down_proj", (d, f))):
        per_layer.append((f"mlp.{name}.weight", ("mlp", name, "kernel"), "transpose", shape))
    for hf_name, ours in norms:
        per_layer.append((f"{hf_name}.weight", (ours, "scale"), "copy", (d,)))
    for i in range(c.num_layers):
        out.extend(
            TensorMapping(f"model.layers.{i}.{suffix}", ("layers", *path), i, kind, shape)
            for suffix, path, kind, shape in per_layer
        )
    out.append(TensorMapping("model.norm.weight", ("final_norm", "scale"), None, "copy", (d,)))
    if not c.tie_embeddings:
        out.append(TensorMapping("lm_head.weight", ("lm_head", "weight"), None, "table", table))
    return out


def params_from_hf(config: TransformerConfig, get_tensor: Callable[[str], np.ndarray]) -> dict[str, Any]:
    """Our nested parameter dict, pulling Hugging Face tensors one at a time by name.

    Raises KeyError naming a tensor ``get_tensor`` does not have and ValueError naming a
    tensor whose shape is wrong. Vocabulary rows are zero-padded to padded_vocab_size.
    """
    params: dict[str, Any] = {}
    for m in hf_param_names(config):
        try:
            tensor = np.asarray(get_tensor(m.hf_name))
        except KeyError:
            needed = ".".join(m.path)
            raise KeyError(f"checkpoint has no tensor {m.hf_name!r} (needed for {needed})") from None
        if tensor.shape != m.hf_shape:
            raise ValueError(f"tensor {m.hf_name!r}: expected shape {m.hf_shape}, got {tensor.shape}")
        value = tensor_from_hf(config, m, tensor)
        parent = params
        for key in m.path[:-1]:
            parent = parent.setdefault(key, {})
        if m.layer is None:
            parent[m.path[-1]] = value
        else:
            if m.path[-1] not in parent:
                parent[m.path[-1]] = np.empty((config.num_layers, *value.shape), value.dtype)
            parent[m.path[-1]][m.layer] = value
    return params


def params_to_hf(config: TransformerConfig, params: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (Hugging Face name, tensor) one at a time: unstacked, unpadded, HF layout."""
    for m in hf_param_names(config):
        value = params
        for key in m.path:
            value = value[key]
        if m.layer is not None:
            value = value[m.layer]
        yield m.hf_name, tensor_to_hf(config, m, np.asarray(value))


def tensor_from_hf(config: TransformerConfig, m: TensorMapping, t: np.ndarray) -> np.ndarray:
    """One Hugging Face tensor (a single layer's, for stacked parameters) in our layout."""
    if m.kind == "table":
        pad = config.padded_vocab_size - config.vocab_size
        return np.concatenate([t, np.zeros((pad, t.shape[1]), t.dtype)]) if pad else t
    if m.kind == "in_proj":
        return np.ascontiguousarray(t.T).reshape(config.d_model, -1, config.head_dim)
    if m.kind == "out_proj":
        return np.ascontiguousarray(t.T).reshape(-1, config.head_dim, config.d_model)
    if m.kind == "head_bias":
        return t.reshape(-1, config.head_dim)
    if m.kind == "transpose":
        return np.ascontiguousarray(t.T)
    return t


def tensor_to_hf(config: TransformerConfig, m: TensorMapping, v: np.ndarray) -> np.ndarray:
    """One parameter (a single layer's slice, for stacked ones) in Hugging Face's layout."""
    if m.kind == "table":
        out = v[: config.vocab_size]
    elif m.kind == "in_proj":
        out = v.reshape(config.d_model, -1).T
    elif m.kind == "out_proj":
        out = v.reshape(-1, config.d_model).T
    elif m.kind == "head_bias":
        out = v.reshape(-1)
    elif m.kind == "transpose":
        out = v.T
    else:
        out = v
    out = np.ascontiguousarray(out)
    if out.shape != m.hf_shape:
        raise ValueError(
            f"parameter {'.'.join(m.path)} gives {m.hf_name!r} of shape {out.shape}, expected {m.hf_shape}"
        )
    return out
