"""Tiny Liquid run (tiny Gemma, 256 text tokens + 64 image codes) for tests and smoke runs.

    liquid-jax train --config configs/tiny_liquid.py:smoke --workdir /tmp/tiny \
      --config.tokenizer=TOKENIZER.model \
      --config.data.sources='({"path": "TEXT_SHARDS", "kind": "text"}, {"path": "IMAGE_SHARDS", "kind": "image"})'

``:smoke`` is a seconds-long preset (20 steps, short rows); without it, 300 steps.
"""

import ml_collections

from liquid_jax.train.config import base_model, train_config


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = train_config(base_model("tiny_gemma.py", __file__))
    config.model.dtype = "float32"
    config.data.seq_len = 256
    config.data.batch_size = 8
    config.data.packing_bins = 16
    config.data.read_threads = 1
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 10
    config.train.steps = 300
    config.train.loss_chunk_size = 128
    config.checkpoint.every = 100
    config.checkpoint.keep = 2
    if preset == "smoke":
        config.data.seq_len = 128
        config.train.steps = 20
        config.checkpoint.every = 10
    elif preset:
        raise ValueError(f"unknown preset {preset!r} for tiny_liquid.py; expected 'smoke' or none")
    return config
