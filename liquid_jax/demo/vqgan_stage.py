"""Stage ``vqgan``: train the image tokenizer on the world's training renders and
measure its reconstruction PSNR (``shapes_metrics.reconstruction_psnr``) on renders of the
held-out prompts."""

from __future__ import annotations

from liquid_jax.api import load_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.demo import heldout
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.eval import shapes_metrics
from liquid_jax.shapes.world import canvas_name, render
from liquid_jax.train.vqgan import trainer as vqgan_trainer

STAGE = "vqgan"


def load_codec(context: Context, batch_size: int = 64) -> ImageCodec:
    """The stage's trained VQGAN, read from its training workdir."""
    return load_vqgan(context.path(STAGE), batch_size=batch_size)


def run(context: Context) -> dict:
    config = context.config.vqgan.copy_and_resolve_references()
    config.data.source = "folder"
    config.data.folder = context.path(world_stage.STAGE, "train", "images")
    trained = vqgan_trainer.train(config, context.stage_dir(STAGE))
    codec = load_codec(context)
    renders = [render(s) for s in heldout.held_out(context).scenes]
    return {
        "psnr_heldout": shapes_metrics.reconstruction_psnr(codec, renders),
        "num_image_codes": codec.num_image_codes,
        "grids": {canvas_name(c): list(codec.grid_for(*c)) for c in context.config.world.canvases},
        "pixels_per_code": codec.pixels_per_code,
        "train_final": trained,
    }
