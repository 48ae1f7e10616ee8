"""Tiny Gemma for tests: multi-query attention, 2 layers, 256 text tokens + 64 image codes."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma", text_vocab_size=256, num_image_codes=64, d_model=64, num_layers=2,
        num_heads=4, num_kv_heads=1, head_dim=16, mlp_dim=128, vocab_pad_multiple=128,
        max_position_embeddings=512,
    )
    return config
