"""Gemma 2 2B (google/gemma-2-2b) extended by 8192 image codes."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma2", text_vocab_size=256_000, d_model=2304, num_layers=26, num_heads=8,
        num_kv_heads=4, head_dim=256, mlp_dim=9216, query_pre_attn_scalar=256.0,
        vocab_pad_multiple=128,
    )
    return config
