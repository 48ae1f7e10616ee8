"""Text-to-image with classifier-free guidance, upstream's algorithm.

Each prompt yields ``num_images`` conditional rows and as many unconditional rows in one
batch. Per step only the image-code rows of the LM head are computed (which is the same
as masking every text token), the guided logits ``u + guidance_scale * (c - u)`` are filtered and
sampled, and the chosen code is fed to both rows. Exactly ``h * w`` codes: one forward
pass each, or, with ``speculative_window``, several per pass by speculative Jacobi
decoding (``liquid_jax.sample.speculative``: the same distribution, fewer passes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np

from liquid_jax.model.transformer import Transformer
from liquid_jax.sample.decode_loop import generate_tokens
from liquid_jax.sample.filters import SamplingParams
from liquid_jax.errors import UserError
from liquid_jax.model.image_format import DEFAULT_GRID, DEFAULT_PIXELS_PER_CODE
from liquid_jax.sample.prompts import text_to_image_prompts
from liquid_jax.sample.speculative import generate_speculative
from liquid_jax.tokenizer.vocab import MultimodalVocab


@dataclasses.dataclass(frozen=True)
class ImageGeneration:
    """codes int32 [N, h*w] (raster order; image i of prompt p is row p * num_images + i),
    the grid (h, w), uint8 images [N, H, W, 3] when a codec decoded them, and the forward
    passes each image took [N]."""

    codes: np.ndarray
    grid: tuple[int, int]
    images: np.ndarray | None = None
    forwards: np.ndarray | None = None


def guided_batch(
    vocab: MultimodalVocab, prompts: Sequence[str], num_images: int, grid: tuple[int, int],
    pixels_per_code: int = DEFAULT_PIXELS_PER_CODE, guided: bool = True, size_prefix: bool = False,
) -> list[list[int]]:
    """Conditional rows (each prompt ``num_images`` times), then the unconditional rows."""
    conditional, unconditional = [], []
    for prompt in prompts:
        cond, uncond = text_to_image_prompts(vocab, prompt, grid, pixels_per_code, size_prefix)
        conditional += [cond] * num_images
        unconditional += [uncond] * num_images
    return conditional + unconditional if guided else conditional


def generate_image_codes(
    model: Transformer,
    vocab: MultimodalVocab,
    prompts: Sequence[str],
    *,
    guidance_scale: float | None = 7.0,
    sampling: SamplingParams = SamplingParams(temperature=0.99, top_k=4096, top_p=0.96),
    num_images: int = 4,
    seed: int = 0,
    grid: tuple[int, int] = DEFAULT_GRID,
    pixels_per_code: int = DEFAULT_PIXELS_PER_CODE,
    size_prefix: bool = False,
    speculative_window: int = 0,
    coupling: str = "gumbel",
    draft_library: np.ndarray | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: str | None = None,
) -> ImageGeneration:
    """Samples ``num_images`` code grids per prompt. ``guidance_scale=None`` disables guidance
    (conditional rows only); ``size_prefix``: prompt with the size sentence (as the model
    was trained, see ``ImageFormat``). ``speculative_window`` L >= 2 drafts L - 1 codes
    ahead and verifies them in one pass (``coupling``: "gumbel" or "maximal"), drafting
    also from ``draft_library`` (code grids [M, h * w] of known images,
    ``read_draft_library``) when given; 0 decodes token by token. Either way image i's
    randomness is keyed by ``seed`` and i alone."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if guidance_scale is not None and not (math.isfinite(guidance_scale) and guidance_scale >= 0):
        raise UserError(f"guidance_scale must be a finite number >= 0 (or None for no guidance), got {guidance_scale}")
    config = model.config
    if not config.num_image_codes:
        raise ValueError("this model has no image codes (num_image_codes = 0); it cannot draw")
    if config.text_vocab_size != vocab.text_vocab_size or config.num_image_codes != vocab.num_image_codes:
        raise ValueError(
            f"vocabulary mismatch: model has {config.text_vocab_size} text tokens + "
            f"{config.num_image_codes} codes, tokenizer {vocab.text_vocab_size} + {vocab.num_image_codes}"
        )
    h, w = (int(g) for g in grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid {tuple(grid)} must have positive height and width")
    if num_images < 1:
        raise UserError(f"num_images must be >= 1, got {num_images}")
    if not prompts:
        raise UserError("no prompts given")
    if speculative_window < 0 or speculative_window == 1:
        raise UserError(f"speculative_window must be 0 (token by token) or >= 2, got {speculative_window}")
    if draft_library is not None and not speculative_window:
        raise UserError("a draft library drafts for speculative decoding; give a speculative_window >= 2 too")
    rows = guided_batch(vocab, prompts, num_images, (h, w), pixels_per_code, guided=guidance_scale is not None,
                        size_prefix=size_prefix)
    longest = max(len(r) for r in rows)
    if longest + h * w > config.max_position_embeddings:
        raise UserError(f"a {h}x{w} grid is {h * w} codes after a prompt of {longest} tokens: "
                        f"{longest + h * w} positions, more than the model's context of "
                        f"{config.max_position_embeddings}; draw a smaller grid")
    images = len(prompts) * num_images
    common = dict(sampling=sampling, seed=seed, vocab_range=(config.text_vocab_size, config.vocab_size),
                  guidance_scale=guidance_scale, mesh=mesh, progress=progress)
    if speculative_window:
        result = generate_speculative(model, rows, h * w, window=speculative_window, coupling=coupling,
                                      library=draft_library, **common)
        tokens, forwards = result.tokens, result.forwards
    else:
        tokens = generate_tokens(model, rows, h * w, **common).tokens[:images]
        forwards = np.full((images,), h * w, np.int32)
    return ImageGeneration(codes=vocab.image_codes(tokens), grid=(h, w), forwards=forwards)


def generate_images(
    model: Transformer,
    vocab: MultimodalVocab,
    prompts: Sequence[str],
    codec: Any,
    **kwargs: Any,
) -> ImageGeneration:
    """``generate_image_codes`` then VQGAN decoding to uint8 images (same arguments;
    ``pixels_per_code`` comes from the codec). A codec that cannot decode this model's
    codes is refused before any generation."""
    if not codec.has_decoder:
        raise UserError("this VQGAN has no decoder (an encoder-only checkpoint); it cannot draw images")
    if codec.num_image_codes != model.config.num_image_codes:
        raise UserError(f"the VQGAN's codebook has {codec.num_image_codes} codes, the model "
                        f"{model.config.num_image_codes}; use the VQGAN the model was trained with")
    result = generate_image_codes(
        model, vocab, prompts, pixels_per_code=codec.pixels_per_code, **kwargs
    )
    images = codec.decode(result.codes, grid=result.grid)
    return dataclasses.replace(result, images=images)
