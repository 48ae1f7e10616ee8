"""Gemma 2 9B (google/gemma-2-9b) extended by 8192 image codes."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma2", text_vocab_size=256_000, d_model=3584, num_layers=42, num_heads=16,
        num_kv_heads=8, head_dim=256, mlp_dim=14_336, query_pre_attn_scalar=256.0,
        vocab_pad_multiple=128,
    )
    return config
