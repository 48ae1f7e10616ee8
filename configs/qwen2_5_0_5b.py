"""Qwen2.5 0.5B (Qwen/Qwen2.5-0.5B) extended by 8192 image codes."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "qwen2", text_vocab_size=151_936, d_model=896, num_layers=24, num_heads=14,
        num_kv_heads=2, head_dim=64, mlp_dim=4864, tie_embeddings=True,
        max_position_embeddings=32_768, vocab_pad_multiple=128,
        special_tokens=dict(bos=151_643, eos=151_643, pad=151_643),
    )
    return config
