"""Liquid scaling run on Llama-3.2 1B (paper Fig. 1): batch 512 x 2048, constant lr 2e-5.

    liquid-jax train --config configs/llama3_2_1b_liquid.py --workdir gs://BUCKET/llama3_2_1b_liquid \
      --config.tokenizer=gs://BUCKET/llama3_2_1b --config.init.path=gs://BUCKET/llama3_2_1b-liquid-init \
      --config.data.sources='({"path": "gs://BUCKET/text", "kind": "text"}, {"path": "gs://BUCKET/images", "kind": "image"})'
"""

import ml_collections

from liquid_jax.train.config import scaling_run_config


def get_config() -> ml_collections.ConfigDict:
    return scaling_run_config("llama3_2_1b.py", __file__, large=False)
