"""Qwen2.5 7B (Qwen/Qwen2.5-7B) extended by 8192 image codes (untied LM head)."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "qwen2", text_vocab_size=152_064, d_model=3584, num_layers=28, num_heads=28,
        num_kv_heads=4, head_dim=128, mlp_dim=18_944, tie_embeddings=False,
        max_position_embeddings=131_072, vocab_pad_multiple=128,
        special_tokens=dict(bos=151_643, eos=151_643, pad=151_643),
    )
    return config
