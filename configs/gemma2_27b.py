"""Gemma 2 27B (google/gemma-2-27b) extended by 8192 image codes.

Its attention scale is (d_model / num_heads) ** -0.5 = 144 ** -0.5, not head_dim ** -0.5."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma2", text_vocab_size=256_000, d_model=4608, num_layers=46, num_heads=32,
        num_kv_heads=16, head_dim=128, mlp_dim=36_864, query_pre_attn_scalar=144.0,
        vocab_pad_multiple=128,
    )
    return config
