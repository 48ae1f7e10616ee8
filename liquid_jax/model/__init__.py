"""liquid_jax.model: the decoder (Gemma, Gemma 2, Llama 3, Qwen2) and its KV cache."""

from liquid_jax.model.config import (
    SpecialTokens,
    TransformerConfig,
    load_model_config,
    model_config_dict,
)
from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import Transformer, abstract_model, from_params, param_count

__all__ = [
    "KVCache",
    "SpecialTokens",
    "Transformer",
    "TransformerConfig",
    "abstract_model",
    "from_params",
    "load_model_config",
    "model_config_dict",
    "param_count",
]
