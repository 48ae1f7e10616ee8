"""Tiny Gemma 2 for tests: 4 layers alternating window-16 / global attention."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma2", text_vocab_size=256, num_image_codes=64, d_model=64, num_layers=4,
        num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=128, query_pre_attn_scalar=16.0,
        sliding_window=16, vocab_pad_multiple=128, max_position_embeddings=512,
    )
    return config
