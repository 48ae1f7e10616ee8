"""Stage ``heldout``: what the demo is evaluated on, written to ``heldout/eval.json``.

* ``prompts``: scenes drawn like the training scenes but with another seed, their
  ``canvases`` ((height, width) each), and ``seen`` marking those whose caption also occurs
  on the same canvas among the training pairs (the world is small, so many single-shape
  scenes do); metrics are reported on all and on the unseen ones;
* ``novel_pair_prompts`` (and ``novel_pair_canvases``): scenes using (colour, kind) pairs
  that never occur in training;
* ``text``: text documents for perplexity, drawn with another seed.
"""

from __future__ import annotations

import json
from typing import Sequence

from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.eval.shapes_metrics import HeldOut
from liquid_jax.shapes.captions import caption, parse_caption
from liquid_jax.shapes.corpus import text_corpus
from liquid_jax.shapes.world import CANVAS, Scene, canvas_name, sample_scenes

STAGE = "heldout"
EVAL_FILE = "eval.json"
# Offsets keeping the random streams of the held-out parts apart from the training data.
_PROMPT_SEED, _NOVEL_SEED, _TEXT_SEED = 1_000, 2_000, 3_000


def run(context: Context) -> dict:
    c = context.config.world
    world = world_stage.world_of(c)
    seed = context.config.seed
    with open(context.path(world_stage.STAGE, "train", "captions.jsonl"), encoding="utf-8") as f:
        trained = {(row["caption"], row["canvas"]) for row in map(json.loads, f)}
    scenes = sample_scenes(c.eval_prompts, "train", seed + _PROMPT_SEED, world)
    novel = sample_scenes(c.eval_prompts, "heldout", seed + _NOVEL_SEED, world)
    evaluation = {
        "prompts": [caption(s) for s in scenes],
        "canvases": [list(s.canvas) for s in scenes],
        "seen": [(caption(s), canvas_name(s.canvas)) in trained for s in scenes],
        "novel_pair_prompts": [caption(s) for s in novel],
        "novel_pair_canvases": [list(s.canvas) for s in novel],
        "text": text_corpus(c.eval_text_docs, seed + _TEXT_SEED, world),
    }
    with open(context.path(STAGE, EVAL_FILE), "w") as f:
        json.dump(evaluation, f, indent=1)
    return {"prompts": len(scenes), "seen_in_training": sum(evaluation["seen"]),
            "text_docs": len(evaluation["text"])}


def load_eval(context: Context) -> dict:
    """The held-out prompts and text written by this stage."""
    with open(context.path(STAGE, EVAL_FILE)) as f:
        return json.load(f)


def scenes_of(captions: Sequence[str], canvases: Sequence[Sequence[int]] | None = None) -> list[Scene]:
    """Scenes of canonical captions (as written by this stage) on their canvases (the
    default canvas when None)."""
    canvases = [CANVAS] * len(captions) if canvases is None else [tuple(c) for c in canvases]
    scenes = [parse_caption(t, canvas) for t, canvas in zip(captions, canvases, strict=True)]
    bad = [t for t, s in zip(captions, scenes) if s is None]
    if bad:
        raise ValueError(f"not captions of the shapes world: {bad[:3]}")
    return scenes


def held_out(context: Context) -> HeldOut:
    """The held-out prompts (with their scenes) and text written by this stage."""
    evaluation = load_eval(context)
    return HeldOut(
        prompts=evaluation["prompts"],
        scenes=scenes_of(evaluation["prompts"], evaluation["canvases"]),
        seen=evaluation["seen"],
        novel_prompts=evaluation["novel_pair_prompts"],
        novel_scenes=scenes_of(evaluation["novel_pair_prompts"], evaluation["novel_pair_canvases"]),
        texts=evaluation["text"],
    )
