"""Llama 3.2 1B (meta-llama/Llama-3.2-1B) extended by 8192 image codes."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "llama", text_vocab_size=128_256, d_model=2048, num_layers=16, num_heads=32,
        num_kv_heads=8, head_dim=64, mlp_dim=8192, tie_embeddings=True,
        max_position_embeddings=131_072, vocab_pad_multiple=128,
        rope_scaling=dict(
            rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
        special_tokens=dict(bos=128_000, eos=128_001, pad=128_001),
    )
    return config
