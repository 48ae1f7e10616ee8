"""The demo's stages, in order."""

from __future__ import annotations

from liquid_jax.demo import (
    base_lm_stage, evaluate, heldout, liquid_stage, pretokenize_stage, report_stage, tokenizer_stage, vqgan_stage,
)
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context, Stage, run_stages


def _report(context: Context) -> dict:
    return report_stage.write(context, STAGES)


STAGES: tuple[Stage, ...] = (
    Stage(world_stage.STAGE, "render the shapes world: image-caption pairs and a text corpus", world_stage.run),
    Stage(heldout.STAGE, "held-out prompts, novel-pair prompts and text for evaluation", heldout.run),
    Stage(tokenizer_stage.STAGE, "train a SentencePiece tokenizer with Gemma's special ids", tokenizer_stage.run),
    Stage(vqgan_stage.STAGE, "train the VQGAN image tokenizer", vqgan_stage.run),
    Stage(pretokenize_stage.STAGE, "images -> VQGAN codes, text -> shards", pretokenize_stage.run),
    Stage(base_lm_stage.STAGE, "pre-train the base Gemma LM on text; export it to Hugging Face format",
          base_lm_stage.run),
    Stage(liquid_stage.STAGE, "extend the vocabulary by the codebook; mixed Liquid training", liquid_stage.run),
    Stage(evaluate.STAGE, "text-to-image, captioning and text perplexity on held-out data", evaluate.run),
    Stage(report_stage.STAGE, "write report.json and report.html", _report),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_demo(context: Context, only: str | None = None) -> dict:
    """Runs the demo (or one stage); returns the stage records."""
    return run_stages(STAGES, context, only)
