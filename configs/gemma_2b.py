"""Gemma 2B (google/gemma-2b) extended by 8192 image codes: multi-query attention."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma", text_vocab_size=256_000, d_model=2048, num_layers=18, num_heads=8,
        num_kv_heads=1, head_dim=256, mlp_dim=16_384, vocab_pad_multiple=128,
    )
    return config
