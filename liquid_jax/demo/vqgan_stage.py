"""Stage ``vqgan``: train the image tokenizer on the world's training renders and
measure its reconstruction PSNR on renders of the held-out prompts."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import jax.numpy as jnp

from liquid_jax.api import load_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.data import shapes
from liquid_jax.demo import heldout
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.tokenizer.image import to_model_input
from liquid_jax.train.vqgan import losses as vqgan_losses
from liquid_jax.train.vqgan import trainer as vqgan_trainer

STAGE = "vqgan"


def load_codec(context: Context, batch_size: int = 64) -> ImageCodec:
    """The stage's trained VQGAN, read from its training workdir."""
    return load_vqgan(context.path(STAGE), batch_size=batch_size)


def reconstruct(codec: ImageCodec, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """uint8 images after encode -> decode, batched by size."""
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    sizes: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        sizes.setdefault(image.shape[:2], []).append(i)
    for size, indices in sizes.items():
        batch = np.stack([images[i] for i in indices])
        for i, image in zip(indices, codec.decode(codec.encode(batch), grid=codec.grid_for(*size))):
            out[i] = image
    return out


def reconstruction_psnr(codec: ImageCodec, images: Sequence[np.ndarray]) -> float:
    """Mean PSNR (dB) of encode -> decode over uint8 images."""
    to_model = lambda x: to_model_input(jnp.asarray(x))[None]  # noqa: E731
    return float(np.mean([vqgan_losses.psnr(to_model(a), to_model(b))[0]
                          for a, b in zip(images, reconstruct(codec, images))]))


def run(context: Context) -> dict:
    config = context.config.vqgan.copy_and_resolve_references()
    config.data.source = "folder"
    config.data.folder = context.path(world_stage.STAGE, "train", "images")
    trained = vqgan_trainer.train(config, context.stage_dir(STAGE))
    codec = load_codec(context)
    renders = [shapes.render(s) for s in heldout.prompt_scenes(heldout.load_eval(context))]
    return {
        "psnr_heldout": reconstruction_psnr(codec, renders),
        "num_image_codes": codec.num_image_codes,
        "grids": {world_stage.canvas_name(c): list(codec.grid_for(*c)) for c in context.config.world.canvases},
        "pixels_per_code": codec.pixels_per_code,
        "train_final": trained,
    }
