"""Stage ``liquid``: the Liquid recipe on the base LM, as a user would run it on Gemma.

The base model's Hugging Face directory is converted to a liquid_jax checkpoint with its
vocabulary extended by the VQGAN's codebook, then trained on mixed data: text-only
documents and image-caption pairs (text-to-image with CFG dropout, or captioning).
"""

from __future__ import annotations

import os

import ml_collections

from liquid_jax.convert.hf import convert_hf_to_liquid
from liquid_jax.demo import base_lm_stage, pretokenize_stage, tokenizer_stage, training, vqgan_stage
from liquid_jax.demo.stages import Context
from liquid_jax.checkpoint.model import read_model_card
from liquid_jax.train import export

STAGE = "liquid"
INIT_DIR = "init"
MODEL_DIR = "model"


def model_path(context: Context, stage: str = STAGE) -> str:
    return context.path(stage, MODEL_DIR)


def mixture(context: Context, run: ml_collections.ConfigDict) -> list[dict]:
    """Data sources of a Liquid run: text and/or image pairs with the run's weights."""
    sources = []
    if run.text_weight > 0:
        sources.append({"name": "text", "path": pretokenize_stage.text_shards(context),
                        "kind": "text", "weight": float(run.text_weight)})
    if run.image_weight > 0:
        sources.append({"name": "images", "path": pretokenize_stage.image_shards(context),
                        "kind": "image", "weight": float(run.image_weight)})
    if not sources:
        raise ValueError("a Liquid run needs text_weight > 0 or image_weight > 0")
    return sources


def train_liquid(context: Context, stage: str, base_hf: str, run: ml_collections.ConfigDict) -> dict:
    """Extends ``base_hf`` by the codebook, trains it with ``run`` in ``<stage>/`` and
    saves the result to ``<stage>/model``."""
    vqgan = context.outputs(vqgan_stage.STAGE)
    init = context.path(stage, INIT_DIR)
    if not os.path.exists(init):
        convert_hf_to_liquid(base_hf, init, extend_image_codes=vqgan["num_image_codes"])
    stored, _ = read_model_card(init)
    model = ml_collections.ConfigDict(stored.replace(dtype="float32").to_dict())
    config = training.run_config(model, run, tokenizer_stage.tokenizer_path(context),
                                 mixture(context, run), context.config.seed)
    config.init.kind, config.init.path = "checkpoint", init
    config.data.t2i_ratio = run.t2i_ratio
    config.data.cfg_drop = run.cfg_drop
    # Image sequences state their size; the model's card records it, and the samplers follow.
    config.data.size_prefix = True
    workdir = context.path(stage, training.TRAIN_DIR)
    result = training.train(config, workdir)
    export.export(workdir, model_path(context, stage), overwrite=True)
    return {"model": model_path(context, stage), "steps": result.step,
            "final_loss": result.last_metrics.get("loss"), "metrics": training.metrics_path(workdir)}


def run(context: Context) -> dict:
    return train_liquid(context, STAGE, base_lm_stage.hf_path(context), context.config.liquid)
