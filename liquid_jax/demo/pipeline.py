"""The demo's stages, in order."""

from __future__ import annotations

from tqdm import tqdm

from liquid_jax.demo import (
    base_lm_stage, evaluate, heldout, liquid_stage, pretokenize_stage, report_stage, timing, tokenizer_stage,
    vqgan_stage,
)
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context, Stage, run_stages, stage_times, stages_to_run


def _report(context: Context) -> dict:
    return report_stage.write(context, STAGES)


STAGES: tuple[Stage, ...] = (
    Stage(world_stage.STAGE, "render the shapes world: image-caption pairs and a text corpus", world_stage.run,
          ("seed", "world")),
    Stage(heldout.STAGE, "held-out prompts, novel-pair prompts and text for evaluation", heldout.run),
    Stage(tokenizer_stage.STAGE, "train a SentencePiece tokenizer with Gemma's special ids", tokenizer_stage.run,
          ("tokenizer", "vqgan.data.image_size")),
    Stage(vqgan_stage.STAGE, "train the VQGAN image tokenizer", vqgan_stage.run, ("vqgan",)),
    Stage(pretokenize_stage.STAGE, "images -> VQGAN codes, text -> shards", pretokenize_stage.run),
    Stage(base_lm_stage.STAGE, "pre-train the base Gemma LM on text; export it to Hugging Face format",
          base_lm_stage.run, ("model", "base")),
    Stage(liquid_stage.STAGE, "extend the vocabulary by the codebook; mixed Liquid training", liquid_stage.run,
          ("liquid", "liquid_mix")),
    Stage(evaluate.STAGE, "text-to-image, captioning and text perplexity on held-out data", evaluate.run,
          ("sample",)),
    Stage(report_stage.STAGE, "write report.json and report.html", _report, ("stage_cost_gflop", "step_cost_gflop")),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def run_demo(context: Context, only: str | None = None, rerun_changed: bool = False) -> dict:
    """Runs the demo (or one stage) and returns the stage records. It measures this machine
    first and says how long it expects to take, and at the end how long each stage took.
    Finished stages whose config differs are refused, or re-run with ``rerun_changed``."""
    todo = stages_to_run(STAGES, context, only, rerun_changed)
    info = timing.calibrate(context.workdir)
    tqdm.write(timing.plan_line(info, timing.expected_seconds(context.config, info["matmul_gflops"], todo)))
    records = run_stages(STAGES, context, only, rerun_changed)
    expected = timing.expected_seconds(context.config, info["matmul_gflops"], STAGE_NAMES)
    for row in timing.summary_rows(stage_times(context.workdir, STAGES), expected):
        tqdm.write(f"{row['stage']:>12}: {row['seconds']:7.1f} s, expected {row['expected_seconds']} s")
    return records
