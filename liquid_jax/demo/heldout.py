"""Stage ``heldout``: what the demo is evaluated on, written to ``heldout/eval.json``.

* ``prompts``: scenes drawn like the training scenes but with another seed, and ``seen``
  marking those whose caption also occurs among the training pairs (the world is small,
  so many single-shape scenes do); metrics are reported on all and on the unseen ones;
* ``novel_pair_prompts``: scenes using (colour, kind) pairs that never occur in training;
* ``text``: text documents for perplexity, drawn with another seed.
"""

from __future__ import annotations

import json

from liquid_jax.data import shapes
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context

STAGE = "heldout"
EVAL_FILE = "eval.json"
# Offsets keeping the random streams of the held-out parts apart from the training data.
_PROMPT_SEED, _NOVEL_SEED, _TEXT_SEED = 1_000, 2_000, 3_000


def run(context: Context) -> dict:
    c = context.config.world
    world = world_stage.world_of(c.name)
    seed = context.config.seed
    with open(context.path(world_stage.STAGE, "train", "captions.jsonl"), encoding="utf-8") as f:
        trained = {json.loads(line)["caption"] for line in f}
    prompts = [shapes.caption(s) for s in shapes.sample_scenes(c.eval_prompts, "train", seed + _PROMPT_SEED, world)]
    evaluation = {
        "prompts": prompts,
        "seen": [p in trained for p in prompts],
        "novel_pair_prompts": [
            shapes.caption(s) for s in shapes.sample_scenes(c.eval_prompts, "heldout", seed + _NOVEL_SEED, world)
        ],
        "text": shapes.text_corpus(c.eval_text_docs, seed + _TEXT_SEED, world),
    }
    with open(context.path(STAGE, EVAL_FILE), "w") as f:
        json.dump(evaluation, f, indent=1)
    return {"prompts": len(prompts), "seen_in_training": sum(evaluation["seen"]),
            "text_docs": len(evaluation["text"])}


def load_eval(context: Context) -> dict:
    """The held-out prompts and text written by this stage."""
    with open(context.path(STAGE, EVAL_FILE)) as f:
        return json.load(f)


def scenes_of(captions: list[str]) -> list[shapes.Scene]:
    """Scenes of canonical captions (as written by this stage)."""
    scenes = [shapes.parse_caption(t) for t in captions]
    bad = [t for t, s in zip(captions, scenes) if s is None]
    if bad:
        raise ValueError(f"not captions of the shapes world: {bad[:3]}")
    return scenes
