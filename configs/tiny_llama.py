"""Tiny Llama 3 for tests: grouped-query attention, llama3 rope scaling, untied head."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "llama", text_vocab_size=256, num_image_codes=64, d_model=64, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128, tie_embeddings=False,
        max_position_embeddings=512, vocab_pad_multiple=128,
        rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=32,
        ),
    )
    return config
