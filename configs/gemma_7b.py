"""Gemma 7B (google/gemma-7b) extended by 8192 image codes: the Liquid_V1_7B model.

vocab 256000 + 8192 = 264192; `--config.model.num_image_codes=0` gives the base Gemma 7B."""

import ml_collections

from liquid_jax.model.config import model_config_dict


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = model_config_dict(
        "gemma", text_vocab_size=256_000, d_model=3072, num_layers=28, num_heads=16,
        num_kv_heads=16, head_dim=256, mlp_dim=24_576, vocab_pad_multiple=128,
    )
    return config
