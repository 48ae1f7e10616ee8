"""Stage ``vqgan``: train the image tokenizer on the world's training renders and
measure its reconstruction PSNR on renders of the held-out prompts."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from liquid_jax.api import load_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.data import shapes
from liquid_jax.demo import heldout
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.train.vqgan import losses as vqgan_losses
from liquid_jax.train.vqgan import trainer as vqgan_trainer

STAGE = "vqgan"


def load_codec(context: Context, batch_size: int = 64) -> ImageCodec:
    """The stage's trained VQGAN, read from its training workdir."""
    return load_vqgan(context.path(STAGE), batch_size=batch_size)


def reconstruct(codec: ImageCodec, images: np.ndarray) -> np.ndarray:
    """uint8 images after encode -> decode."""
    return codec.decode(codec.encode(images), grid=codec.grid_for(*images.shape[1:3]))


def reconstruction_psnr(codec: ImageCodec, images: np.ndarray) -> float:
    """Mean PSNR (dB) of encode -> decode over uint8 images."""
    reconstructed = reconstruct(codec, images)
    to_model = lambda x: jnp.asarray(x, jnp.float32) / 127.5 - 1.0  # noqa: E731
    return float(jnp.mean(vqgan_losses.psnr(to_model(images), to_model(reconstructed))))


def run(context: Context) -> dict:
    config = context.config.vqgan.copy_and_resolve_references()
    config.data.source = "folder"
    config.data.folder = context.path(world_stage.STAGE, "train", "images")
    trained = vqgan_trainer.train(config, context.stage_dir(STAGE))
    codec = load_codec(context)
    prompts = heldout.load_eval(context)["prompts"]
    renders = np.stack([shapes.render(s) for s in heldout.scenes_of(prompts)])
    return {
        "psnr_heldout": reconstruction_psnr(codec, renders),
        "codebook_size": codec.codebook_size,
        "grid": list(codec.grid_for(*renders.shape[1:3])),
        "downsample": codec.downsample_factor,
        "train_final": trained,
    }
