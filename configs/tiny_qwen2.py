"""Tiny Qwen2 for tests: q/k/v biases, grouped-query attention, tied head."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "qwen2", text_vocab_size=256, num_image_codes=64, d_model=64, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128, tie_embeddings=True,
        max_position_embeddings=512, vocab_pad_multiple=128,
    )
    return config
