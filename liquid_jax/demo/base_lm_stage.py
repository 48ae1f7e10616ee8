"""Stage ``base_lm``: pre-train a small Gemma on the text corpus and publish it as a
Hugging Face directory (config.json + safetensors + tokenizer.model). It plays the part
of "an existing LLM" that the Liquid stage starts from."""

from __future__ import annotations

import ml_collections

from liquid_jax.demo import pretokenize_stage, tokenizer_stage, training
from liquid_jax.demo.stages import Context
from liquid_jax.model.config import model_config_dict
from liquid_jax.tokenizer.text import SentencePieceTokenizer
from liquid_jax.train import export

STAGE = "base_lm"
HF_DIR = "hf"


def hf_path(context: Context, stage: str = STAGE) -> str:
    return context.path(stage, HF_DIR)


def model_fields(context: Context, model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The base model: a text-only Gemma with the sizes in ``model``."""
    vocab = SentencePieceTokenizer(tokenizer_stage.tokenizer_path(context)).vocab_size
    sizes = model.to_dict()
    return model_config_dict("gemma", text_vocab_size=vocab, num_image_codes=0,
                             max_position_embeddings=2 * context.config.base.data.seq_len, **sizes)


def train_base(context: Context, stage: str, model: ml_collections.ConfigDict) -> dict:
    """Pre-trains a base LM of sizes ``model`` in ``<stage>/`` and exports ``<stage>/hf``."""
    source = {"name": "text", "path": pretokenize_stage.text_shards(context), "kind": "text", "weight": 1.0}
    config = training.trainer_config(context.config.base, model_fields(context, model).to_dict(),
                                     tokenizer_stage.tokenizer_path(context), [source])
    workdir = context.path(stage, training.TRAIN_DIR)
    result = training.train(config, workdir)
    export.export(workdir, hf_path(context, stage), to="hf", overwrite=True)
    return {"hf_dir": hf_path(context, stage), "steps": result.step,
            "final_loss": result.last_metrics.get("loss"), "metrics": training.metrics_path(workdir)}


def run(context: Context) -> dict:
    return train_base(context, STAGE, context.config.model)
