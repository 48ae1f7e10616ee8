"""Liquid scaling run on Gemma-2 9B (paper Fig. 1): batch 512 x 2048, constant lr 2e-5.

    liquid-jax train --config configs/gemma2_9b_liquid.py --workdir gs://BUCKET/gemma2_9b_liquid \
      --config.tokenizer=gs://BUCKET/gemma2_9b --config.init.path=gs://BUCKET/gemma2_9b-liquid-init \
      --config.data.sources='({"path": "gs://BUCKET/text", "kind": "text"}, {"path": "gs://BUCKET/images", "kind": "image"})'
"""

import ml_collections

from liquid_jax.train.config import scaling_run_config


def get_config() -> ml_collections.ConfigDict:
    return scaling_run_config("gemma2_9b.py", __file__, large=True)
