"""Stage ``world``: the shapes world on disk, in the formats a user's own data would have.

* ``train/images/*.png`` + ``train/captions.jsonl`` ({"image", "caption", "canvas"}):
  image-text pairs on the ``world.canvases`` (the image's size, "WxH"), with two-shape
  scenes over-sampled when ``world.train_two_shape_fraction`` is set;
* ``text/corpus.jsonl`` ({"id", "text"}): the text-only corpus.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import PIL.Image
from tqdm import tqdm

from liquid_jax.demo.stages import Context
from liquid_jax.shapes.captions import caption
from liquid_jax.shapes.corpus import text_corpus
from liquid_jax.shapes.world import DEFAULT_WORLD, EASY_WORLD, World, canvas_name, render, sample_scenes

STAGE = "world"
WORLDS = {"default": DEFAULT_WORLD, "easy": EASY_WORLD}


def world_of(c: ml_collections.ConfigDict) -> World:
    """The world of the demo's ``world`` config: ``c.name``'s on the canvases ``c.canvases``."""
    if c.name not in WORLDS:
        raise ValueError(f"unknown world {c.name!r}; expected one of {sorted(WORLDS)}")
    return dataclasses.replace(WORLDS[c.name], canvases=tuple(tuple(x) for x in c.canvases))


def training_world(c: ml_collections.ConfigDict) -> World:
    """The world the training pairs are drawn from: ``world_of(c)``, with two-shape scenes at
    ``c.train_two_shape_fraction`` when that is set (>= 0). Held-out prompts keep the world's
    own fraction, so over-sampling the harder two-shape scenes changes only the training mix."""
    world = world_of(c)
    if c.train_two_shape_fraction >= 0:
        world = dataclasses.replace(world, two_shape_fraction=c.train_two_shape_fraction)
    return world


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def run(context: Context) -> dict:
    c = context.config.world
    world = training_world(c)
    seed = context.config.seed
    images_dir = os.path.join(context.stage_dir(STAGE), "train", "images")
    os.makedirs(images_dir, exist_ok=True)
    scenes = sample_scenes(c.train_scenes, "train", seed, world)
    rows = []
    for i, scene in enumerate(tqdm(scenes, desc="rendering scenes", unit="img")):
        name = f"images/{i:06d}.png"
        PIL.Image.fromarray(render(scene)).save(os.path.join(images_dir, f"{i:06d}.png"))
        rows.append({"image": name, "caption": caption(scene), "canvas": canvas_name(scene.canvas)})
    _write_jsonl(context.path(STAGE, "train", "captions.jsonl"), rows)

    os.makedirs(context.path(STAGE, "text"), exist_ok=True)
    corpus = text_corpus(c.text_docs, seed, world_of(c))
    _write_jsonl(context.path(STAGE, "text", "corpus.jsonl"),
                 [{"id": f"doc{i}", "text": t} for i, t in enumerate(corpus)])

    return {
        "train_pairs": len(rows),
        "text_docs": len(corpus),
        "distinct_train_captions": len({row["caption"] for row in rows}),
    }

