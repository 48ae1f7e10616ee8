"""Stage ``report``: ``report.json`` and ``report.html`` (image grids, loss curves,
tables) in the work directory."""

from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from liquid_jax.demo import base_lm_stage, evaluate, liquid_stage, vqgan_stage
from liquid_jax.demo import heldout, timing
from liquid_jax.demo.stages import Context, Stage, stage_times
from liquid_jax.eval.report import Curves, ImageGrid, read_jsonl_metrics, write_report

STAGE = "report"
GRID_SIZE = 32
# Steps at the start of a run that include compilation; left out of the speed.
WARMUP_STEPS = 3


def train_tokens_per_s(metrics_jsonl: str) -> float:
    """Median training throughput after the first steps."""
    rows = [r for r in read_jsonl_metrics(metrics_jsonl) if "tokens_per_second" in r]
    steady = rows[WARMUP_STEPS:] or rows
    return float(np.median([r["tokens_per_second"] for r in steady]))


def report_metrics(context: Context, stages: Sequence[Stage]) -> dict:
    """Every headline number of the demo, flat."""
    results = context.outputs(evaluate.STAGE)
    liquid = context.outputs(liquid_stage.STAGE)
    metrics = dict(results)
    metrics["vqgan_psnr"] = context.outputs(vqgan_stage.STAGE)["psnr_heldout"]
    metrics["train_tokens_per_s"] = train_tokens_per_s(liquid["metrics"])
    metrics["text_ppl_ratio"] = results["text_ppl_liquid"] / results["text_ppl_base"]
    times = stage_times(context.workdir, stages)
    for kind in ("seconds", "cpu_seconds"):
        metrics.update({f"{kind}_{name}": t[kind] for name, t in times.items()})
        metrics[f"{kind}_total"] = sum(t[kind] for t in times.values())
    return metrics


def _grids(context: Context) -> list[ImageGrid]:
    samples = evaluate.load_samples(context.path(evaluate.STAGE, evaluate.SAMPLES_FILE))
    evaluation = heldout.load_eval(context)
    with open(context.path(evaluate.STAGE, evaluate.RESULTS_FILE)) as f:
        captions = json.load(f)
    n = GRID_SIZE
    return [
        ImageGrid("t2i_samples", list(samples["images"][:n]), evaluation["prompts"][:n],
                  title="Text-to-image on held-out prompts (prompt under each image)"),
        ImageGrid("captions", list(samples["renders"][:n]), captions["captions"][:n],
                  title="Captions of held-out images (generated caption under each image)"),
        ImageGrid("novel_pair_samples", list(samples["novel_images"][:n]), evaluation["novel_pair_prompts"][:n],
                  title="Text-to-image with (colour, kind) pairs never seen in training"),
    ]


def _curves(context: Context) -> list[Curves]:
    vqgan_metrics = os.path.join(context.path(vqgan_stage.STAGE), "metrics.jsonl")
    return [
        Curves("base_lm_loss", context.outputs(base_lm_stage.STAGE)["metrics"], ("loss",),
               title="Base LM pre-training loss (text)"),
        Curves("liquid_loss", context.outputs(liquid_stage.STAGE)["metrics"],
               ("loss", "text_loss", "image_loss"), title="Liquid training loss"),
        Curves("vqgan_loss", vqgan_metrics, ("eval_psnr",), title="VQGAN held-out PSNR"),
    ]


def write(context: Context, stages: Sequence[Stage]) -> dict:
    """Writes the report; returns its metrics."""
    metrics = report_metrics(context, stages)
    config_table = [{"section": k, "settings": json.dumps(v, sort_keys=True)}
                    for k, v in context.config.to_dict().items()]
    info = timing.read_machine(context.workdir)
    expected = timing.expected_seconds(context.config, info["matmul_gflops"], [s.name for s in stages]) if info else {}
    tables = {"stages": timing.summary_rows(stage_times(context.workdir, stages), expected),
              "machine": [info] if info else [], "config": config_table}
    write_report(context.workdir, title="liquid_jax demo: a mini-Liquid on the shapes world",
                 metrics=metrics, tables=tables,
                 grids=_grids(context), curves=_curves(context))
    return metrics
