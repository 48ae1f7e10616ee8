"""Stage ``pretokenize``: image-caption pairs -> VQGAN-code shards, text corpus -> text
shards (the project's ArrayRecord formats, written by its pre-tokenizers)."""

from __future__ import annotations

import os

from liquid_jax.data.buckets import Bucket
from liquid_jax.data.captioned_images import folder_units
from liquid_jax.data.pretokenize_images import pretokenize_images
from liquid_jax.data.pretokenize_text import pretokenize_text
from liquid_jax.demo import vqgan_stage
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context

STAGE = "pretokenize"
IMAGES_PER_SHARD = 1024


def image_shards(context: Context) -> str:
    return context.path(STAGE, "images")


def text_shards(context: Context) -> str:
    return context.path(STAGE, "text")


def run(context: Context) -> dict:
    train_dir = context.path(world_stage.STAGE, "train")
    units = folder_units(
        train_dir, os.path.join(train_dir, "captions.jsonl"), image_field="image",
        caption_field="caption", per_shard=IMAGES_PER_SHARD,
    )
    codec = vqgan_stage.load_codec(context)
    # One bucket per canvas: every image keeps its size and its own grid of codes.
    buckets = [Bucket.of_size(h, w) for h, w in context.config.world.canvases]
    report = pretokenize_images(units, image_shards(context), codec, buckets=buckets, batch_size=64,
                                decode_threads=2)
    text = pretokenize_text([context.path(world_stage.STAGE, "text", "corpus.jsonl")], text_shards(context))
    return {
        "images_written": report["written"],
        "buckets": report["buckets"],
        "images_dropped": sum(len(report[k]) for k in ("broken", "aspect_filtered", "empty_caption")),
        "text_documents": text["documents"],
    }
