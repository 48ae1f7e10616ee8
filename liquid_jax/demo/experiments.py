"""``--experiment scaling`` and ``--experiment mutual_boost``, built from the demo's stages.

* scaling: at each model size of ``experiments.sizes`` (d_model, num_layers), a base LM
  is pre-trained on text, then Liquid-trained on three mixes -- mixed (text + images),
  text-only, image-only -- with the same steps; each model's held-out text perplexity,
  text-to-image and caption accuracy are measured.
* mutual_boost (the paper's Table 5): from the demo's base LM (its ``base_lm`` stage), a baseline mixture, the
  baseline plus extra text-to-image data, and the baseline plus extra caption data. The
  extra data is ``experiments.extra_weight`` more image-pair weight (``liquid_mix``), all of it
  used as text-to-image (resp. captioning) examples, so the other task's share of
  examples stays as in the baseline; every run has the same number of steps.

Each run is a stage (skipped when done); results go to ``<workdir>/experiments/<name>/``
as ``results.json`` and a markdown table ``table.md``.
"""

from __future__ import annotations

import json
import os

from liquid_jax.demo import base_lm_stage, evaluate, liquid_stage
from liquid_jax.demo.pipeline import STAGES
from liquid_jax.demo.stages import Context, Stage, read_record, run_stages
from liquid_jax.errors import UserError

EXPERIMENTS = ("scaling", "mutual_boost")
DATA_STAGES = ("world", "heldout", "tokenizer", "vqgan", "pretokenize")
PREREQUISITES = {"scaling": DATA_STAGES, "mutual_boost": DATA_STAGES + (base_lm_stage.STAGE,)}
# What every experiment stage reads, besides the settings of the demo stages it builds on.
CONFIG_KEYS = ("model", "base", "liquid", "liquid_mix", "sample", "experiments")
METRICS = ("text_ppl_liquid", "t2i_accuracy", "caption_accuracy", "unseen_t2i_accuracy",
           "unseen_caption_accuracy")


def _liquid_run(context: Context, stage: str, base_stage: str, run: liquid_stage.LiquidRun) -> dict:
    """Trains a Liquid model from ``base_stage``'s export, evaluates it, returns metrics."""
    trained = liquid_stage.train_liquid(context, stage, base_lm_stage.hf_path(context, base_stage), run)
    metrics, _ = evaluate.liquid_metrics(context, trained["model"])
    return {**metrics, "final_loss": trained["final_loss"]}


def _with_mix(run: liquid_stage.LiquidRun, t2i_ratio: float, **weights: float) -> liquid_stage.LiquidRun:
    """``run`` with another ``data.t2i_ratio`` and source weights."""
    train, mix = run.train.copy_and_resolve_references(), run.mix.copy_and_resolve_references()
    train.data.t2i_ratio = t2i_ratio
    mix.update(weights)
    return liquid_stage.LiquidRun(train, mix)


def scaling_mixes(run: liquid_stage.LiquidRun) -> dict[str, liquid_stage.LiquidRun]:
    """The three data mixes of the scaling experiment, otherwise like the demo's run."""
    text, image, ratio = run.mix.text_weight, run.mix.image_weight, run.train.data.t2i_ratio
    return {name: _with_mix(run, ratio, text_weight=t, image_weight=i)
            for name, t, i in (("mixed", text, image), ("text-only", text, 0.0), ("image-only", 0.0, image))}


def boost_mixes(run: liquid_stage.LiquidRun, extra: float) -> dict[str, liquid_stage.LiquidRun]:
    """Baseline, + extra text-to-image, + extra caption data (see the module docstring)."""
    w, ratio = run.mix.image_weight, run.train.data.t2i_ratio
    if w <= 0:
        raise UserError("mutual_boost needs liquid_mix.image_weight > 0 (--config.liquid_mix.image_weight=...)")
    return {name: _with_mix(run, t2i_ratio, image_weight=weight) for name, weight, t2i_ratio in (
        ("baseline", w, ratio),
        ("+ t2i data", w + extra, (w * ratio + extra) / (w + extra)),
        ("+ caption data", w + extra, w * ratio / (w + extra)),
    )}


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def _scaling_stages(context: Context, root: str) -> list[tuple[dict, Stage]]:
    rows = []
    for d_model, layers in context.config.experiments.sizes:
        sizes = context.config.model.copy_and_resolve_references()
        sizes.d_model, sizes.num_layers = int(d_model), int(layers)
        sizes.head_dim = max(16, int(d_model) // sizes.num_heads)
        sizes.mlp_dim = 4 * int(d_model)
        size_dir = f"{root}/d{d_model}_l{layers}"
        base = f"{size_dir}/base"
        rows.append((None, Stage(base, f"base LM d_model={d_model} layers={layers}",
                                 lambda c, s=sizes, st=base: base_lm_stage.train_base(c, st, s), CONFIG_KEYS)))
        for mix, run in scaling_mixes(liquid_stage.demo_run(context)).items():
            stage = f"{size_dir}/{_slug(mix)}"
            label = {"d_model": d_model, "layers": layers, "mix": mix}
            rows.append((label, Stage(stage, f"Liquid {mix} at d_model={d_model}",
                                      lambda c, st=stage, r=run, b=base: _liquid_run(c, st, b, r), CONFIG_KEYS)))
    return rows


def _boost_stages(context: Context, root: str) -> list[tuple[dict, Stage]]:
    mixes = boost_mixes(liquid_stage.demo_run(context), context.config.experiments.extra_weight)
    rows = []
    for mix, run in mixes.items():
        stage = f"{root}/{_slug(mix)}"
        label = {"mixture": mix, "image_weight": round(run.mix.image_weight, 3),
                 "t2i_ratio": round(run.train.data.t2i_ratio, 3)}
        rows.append((label, Stage(stage, f"Liquid {mix}",
                                  lambda c, st=stage, r=run: _liquid_run(c, st, base_lm_stage.STAGE, r),
                                  CONFIG_KEYS)))
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A GitHub markdown table of dicts with the same keys."""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run_experiment(name: str, context: Context, rerun_changed: bool = False) -> str:
    """Runs the demo stages the experiment needs, then its runs; returns the table. Finished
    stages whose config differs are refused, or re-run with ``rerun_changed``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; expected one of {EXPERIMENTS}")
    root = f"experiments/{name}"
    labelled = (_scaling_stages if name == "scaling" else _boost_stages)(context, root)
    run_stages([s for s in STAGES if s.name in PREREQUISITES[name]] + [stage for _, stage in labelled], context,
               rerun_changed=rerun_changed)
    rows = []
    for label, stage in labelled:
        if label is not None:
            outputs = read_record(context.workdir, stage.name)["outputs"]
            rows.append({**label, **{m: outputs[m] for m in METRICS}})
    table = markdown_table(rows)
    os.makedirs(context.path(root), exist_ok=True)
    with open(context.path(root, "results.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(context.path(root, "table.md"), "w") as f:
        f.write(table + "\n")
    return table
