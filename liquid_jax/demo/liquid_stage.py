"""Stage ``liquid``: the Liquid recipe on the base LM, as a user would run it on Gemma.

The base model's Hugging Face directory is converted to a liquid_jax checkpoint with its
vocabulary extended by the VQGAN's codebook, then trained on mixed data: text-only
documents and image-caption pairs (text-to-image with CFG dropout, or captioning).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import ml_collections

from liquid_jax.checkpoint.model import read_model_card
from liquid_jax.convert.hf import convert_hf_to_liquid
from liquid_jax.demo import base_lm_stage, pretokenize_stage, tokenizer_stage, training, vqgan_stage
from liquid_jax.demo.stages import Context
from liquid_jax.train import export

STAGE = "liquid"
INIT_DIR = "init"
MODEL_DIR = "model"


class LiquidRun(NamedTuple):
    """One Liquid training run: a trainer config like the demo config's ``liquid`` and
    source weights like its ``liquid_mix``."""

    train: ml_collections.ConfigDict
    mix: ml_collections.ConfigDict


def demo_run(context: Context) -> LiquidRun:
    """The demo config's Liquid run: ``liquid`` with the weights of ``liquid_mix``."""
    return LiquidRun(context.config.liquid, context.config.liquid_mix)


def model_path(context: Context, stage: str = STAGE) -> str:
    return context.path(stage, MODEL_DIR)


def mixture(context: Context, mix: ml_collections.ConfigDict) -> list[dict]:
    """Data sources of a Liquid run: text and/or image pairs with the weights of ``mix``."""
    training.check_mix(mix)
    sources = []
    if mix.text_weight > 0:
        sources.append({"name": "text", "path": pretokenize_stage.text_shards(context),
                        "kind": "text", "weight": float(mix.text_weight)})
    if mix.image_weight > 0:
        sources.append({"name": "images", "path": pretokenize_stage.image_shards(context),
                        "kind": "image", "weight": float(mix.image_weight)})
    return sources


def train_liquid(context: Context, stage: str, base_hf: str, run: LiquidRun) -> dict:
    """Extends ``base_hf`` by the codebook, trains it as ``run`` says in ``<stage>/`` and
    saves the result to ``<stage>/model``."""
    vqgan = context.outputs(vqgan_stage.STAGE)
    init = context.path(stage, INIT_DIR)
    if not os.path.exists(init):
        convert_hf_to_liquid(base_hf, init, extend_image_codes=vqgan["num_image_codes"])
    stored, _ = read_model_card(init)
    config = training.trainer_config(run.train, stored.to_dict(), tokenizer_stage.tokenizer_path(context),
                                     mixture(context, run.mix))
    config.init.kind, config.init.path = "checkpoint", init
    workdir = context.path(stage, training.TRAIN_DIR)
    result = training.train(config, workdir)
    export.export(workdir, model_path(context, stage), overwrite=True)
    return {"model": model_path(context, stage), "steps": result.step,
            "final_loss": result.last_metrics.get("loss"), "metrics": training.metrics_path(workdir)}


def run(context: Context) -> dict:
    return train_liquid(context, STAGE, base_lm_stage.hf_path(context), demo_run(context))
