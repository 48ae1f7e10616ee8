"""Liquid-7B (the released Liquid_V1_7B recipe): Gemma 7B + 8192 image codes.

Paper: lr 2e-5 cosine, 3% warm-up, weight decay 0, batch 1024 x 2048 tokens, grad-norm
clip 0.5 and max-z loss for 7B+ models. Pure FSDP over all chips.

    liquid-jax train --config configs/gemma_7b_liquid.py --workdir gs://BUCKET/liquid_7b \
      --config.tokenizer=gs://BUCKET/gemma-7b --config.init.path=gs://BUCKET/gemma-7b-liquid-init \
      --config.data.sources='({"path": "gs://BUCKET/text", "kind": "text"}, {"path": "gs://BUCKET/images", "kind": "image"})'
    liquid-jax plan --config configs/gemma_7b_liquid.py --topology v5p-128
"""

import ml_collections

from liquid_jax.train.config import base_model, train_config


def get_config() -> ml_collections.ConfigDict:
    config = train_config(base_model("gemma_7b.py", __file__))
    config.model.remat = "full"
    config.model.scan_layers = True
    config.mesh.data, config.mesh.fsdp = 1, -1
    config.data.seq_len = 2048
    config.data.batch_size = 1024
    config.data.t2i_ratio = 0.8  # paper: 20% of the text-to-image data reversed into captions
    config.optimizer.grad_clip_norm = 0.5
    config.train.z_loss = 1e-4
    config.train.steps = 60_000
    config.train.loss_chunk_size = 16_384
    config.checkpoint.every = 1000
    config.init.kind = "checkpoint"  # a `liquid-jax convert hf` output of google/gemma-7b
    return config
