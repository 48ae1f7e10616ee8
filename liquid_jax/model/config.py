"""TransformerConfig: one dataclass describing every supported decoder family; and
``load_config_file``, the one reader of ml_collections config files (``configs/*.py``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, Literal

import ml_collections

from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES

Family = Literal["gemma", "gemma2", "llama", "qwen2"]
FAMILIES: tuple[str, ...] = ("gemma", "gemma2", "llama", "qwen2")
ATTENTION_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "xla", "splash", "flash_gpu")


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Token ids the Liquid recipe needs; Gemma's are the upstream defaults."""

    bos: int = 2
    eos: int = 1
    pad: int = 0
    boi: int = 7
    eoi: int = 8
    unconditional: int = 9


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a decoder-only LM (Gemma 1/2, Llama 3.x, Qwen2/2.5).

    ``vocab_size`` is the real vocabulary (text tokens followed by ``num_image_codes``
    image codes); ``padded_vocab_size`` is the embedding's row count (a multiple of
    ``vocab_pad_multiple``); padded rows are never sampled nor exported.
    """

    family: Family
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    num_image_codes: int = 0
    vocab_pad_multiple: int = 1
    activation: Literal["gelu_tanh", "silu"] = "silu"
    norm_eps: float = 1e-6
    rope_theta: float = 10_000.0
    # Llama-3 style scaling: {"rope_type": "llama3", "factor", "low_freq_factor",
    # "high_freq_factor", "original_max_position_embeddings"}; stored as a tuple of
    # items so the config stays hashable.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    max_position_embeddings: int = 8192
    tie_embeddings: bool = True
    qkv_bias: bool = False
    # Gemma-specific switches.
    scale_embeddings: bool = False  # multiply embeddings by sqrt(d_model)
    norm_plus_one: bool = False  # RMSNorm weight applied as (1 + w)
    post_norms: bool = False  # Gemma 2 post-attention / post-feed-forward norms
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5
    sliding_window: int | None = None
    sliding_window_pattern: int = 0  # layer i is local if pattern and i % pattern == 0
    special_tokens: SpecialTokens = SpecialTokens()
    # Numerics and compilation (do not change the checkpoint layout).
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    # Which activations the backward pass keeps (see model/remat.py).
    remat: Literal["none", "full", "dots", "dots_no_batch", "save_qkv_proj", "minimal", "minimal_offloaded"] = "none"
    scan_layers: bool = False
    # Self-attention without a KV cache (training, scoring): "auto" is the platform's
    # kernel (splash on TPU, flash_gpu on GPU) where the rows fit its blocks, else xla.
    # Decoding with a KV cache always uses xla. See model/attention.py.
    attention: Literal["auto", "xla", "splash", "flash_gpu"] = "auto"

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(
                f"unknown model.attention {self.attention!r}; expected one of {ATTENTION_IMPLEMENTATIONS}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )

    @property
    def text_vocab_size(self) -> int:
        return self.vocab_size - self.num_image_codes

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_pad_multiple
        return -(-self.vocab_size // m) * m

    def image_token(self, code: int) -> int:
        return self.text_vocab_size + code

    def is_local_layer(self, layer: int) -> bool:
        return bool(
            self.sliding_window and self.sliding_window_pattern
            and layer % self.sliding_window_pattern == 0
        )

    def local_layer_flags(self) -> tuple[bool, ...]:
        """Per layer: True where attention is sliding-window (local)."""
        return tuple(self.is_local_layer(i) for i in range(self.num_layers))

    def replace(self, **changes) -> "TransformerConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["rope_scaling"] = dict(self.rope_scaling) if self.rope_scaling else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransformerConfig":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig fields: {unknown}")
        if d.get("rope_scaling"):
            d["rope_scaling"] = tuple(sorted(dict(d["rope_scaling"]).items()))
        if isinstance(d.get("special_tokens"), dict):
            d["special_tokens"] = SpecialTokens(**d["special_tokens"])
        return cls(**d)


# Architecture switches shared by every size of a family (configs/ start from these).
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": dict(
        activation="gelu_tanh", scale_embeddings=True, norm_plus_one=True, tie_embeddings=True
    ),
    "gemma2": dict(
        activation="gelu_tanh", scale_embeddings=True, norm_plus_one=True, tie_embeddings=True,
        post_norms=True, attn_logit_softcap=50.0, final_logit_softcap=30.0,
        sliding_window=4096, sliding_window_pattern=2,
    ),
    "llama": dict(activation="silu", norm_eps=1e-5, rope_theta=500_000.0),
    "qwen2": dict(activation="silu", qkv_bias=True, rope_theta=1_000_000.0),
}


def model_config_dict(
    family: Family, text_vocab_size: int, num_image_codes: int = DEFAULT_NUM_IMAGE_CODES, **fields: Any
) -> ml_collections.ConfigDict:
    """A ConfigDict with every TransformerConfig field, for ml_collections config files.

    Starts from the dataclass defaults and ``FAMILY_DEFAULTS[family]``, then ``fields``.
    ``vocab_size`` is tied to ``num_image_codes`` by reference, so overriding
    ``--config.model.num_image_codes=0`` yields the base text-only model.
    ``TransformerConfig.from_dict(cfg.to_dict())`` builds the config.
    """
    if family not in FAMILY_DEFAULTS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    values = {
        f.name: f.default for f in dataclasses.fields(TransformerConfig)
        if f.default is not dataclasses.MISSING
    }
    values["special_tokens"] = dataclasses.asdict(SpecialTokens())
    values.update(FAMILY_DEFAULTS[family], family=family, num_image_codes=num_image_codes, **fields)
    if isinstance(values.get("rope_scaling"), dict):
        values["rope_scaling"] = ml_collections.ConfigDict(values["rope_scaling"])
    cfg = ml_collections.ConfigDict(values)
    cfg.vocab_size = cfg.get_ref("num_image_codes") + text_vocab_size
    return cfg


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` (or ``get_config()``) of an ml_collections config file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} has no get_config()")
    return module.get_config(arg) if arg is not None else module.get_config()


def load_model_config(path: str, **overrides: Any) -> TransformerConfig:
    """The TransformerConfig of an ml_collections config file (its ``get_config().model``).

    ``overrides`` are set on the ConfigDict first, as ``--config.model.<key>=`` would be
    (so ``num_image_codes=0`` also shrinks ``vocab_size``).
    """
    model = load_config_file(path).model
    for key, value in overrides.items():
        setattr(model, key, value)
    return TransformerConfig.from_dict(model.to_dict())
