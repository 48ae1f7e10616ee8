"""Sampling entry points for a loaded model (``LiquidLM.generate_images`` / ``generate_text``).

Plain keyword arguments in place of ``SamplingParams``: ``temperature=0`` means greedy.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import numpy as np

from liquid_jax.errors import UserError
from liquid_jax.model.image_format import DEFAULT_PIXELS_PER_CODE
from liquid_jax.sample.draft_library import read_draft_library
from liquid_jax.sample.filters import GREEDY, SamplingParams
from liquid_jax.sample.images import ImageGeneration, generate_image_codes, generate_images as _draw
from liquid_jax.sample.text import TextGeneration, caption_images as _caption, generate_text as _write


_NOT_GIVEN: Any = object()


def sampling_params(temperature: float, top_k: int, top_p: float) -> SamplingParams:
    """Greedy for ``temperature == 0`` or ``top_k == 1`` (the arg-max either way; greedy
    skips the filters and the random numbers), otherwise sampling with the given filters."""
    if temperature == 0:
        return GREEDY
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    return GREEDY if top_k == 1 else params


# Benchmark generation calls generate_images once per batch with the same library path.
_read_library = functools.lru_cache(maxsize=4)(read_draft_library)


def _check_codec(lm: Any, codec: Any) -> None:
    if codec is not None:
        lm.image.check_vqgan(lm.config.num_image_codes, codec)


def _vocab(lm: Any):
    if lm.vocab is None:
        raise ValueError("this model was loaded without tokenizer files; text prompts cannot be encoded")
    return lm.vocab


def _is_single_prompt(prompts: Any) -> bool:
    if isinstance(prompts, str):
        return True
    if isinstance(prompts, np.ndarray):
        return prompts.ndim == 1
    return len(prompts) > 0 and all(isinstance(p, (int, np.integer)) for p in prompts)


def generate_images(
    lm: Any,
    prompts: str | Sequence[str],
    codec: Any = None,
    *,
    guidance_scale: float | None = 7.0,
    temperature: float = 0.99,
    top_k: int = 4096,
    top_p: float = 0.96,
    num_images: int = 4,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    speculative_window: int = 0,
    coupling: str = "gumbel",
    draft_library: str | np.ndarray | None = None,
    progress: bool = True,
    cfg: float | None = _NOT_GIVEN,
) -> ImageGeneration:
    """``num_images`` images per prompt with upstream's guided sampler, prompted as the
    model was trained (``lm.image``: size prefix, pixels per code). ``guidance_scale``:
    classifier-free guidance (None: none); ``cfg``, its former name, still takes its place.

    ``grid`` (h, w) defaults to the first grid the model was trained on (32x32 for
    upstream's). ``speculative_window`` L >= 2 decodes by speculative Jacobi decoding
    (same distribution, fewer forward passes; greedy settings give identical codes), also
    drafting from ``draft_library``: pre-tokenized image shards (a path, as a training
    source) or code grids [M, h * w]. Returns codes [N, h*w] and, with a VQGAN ``codec`` (refused before any
    work if it is not the model's), uint8 images [N, H, W, 3] (image i of prompt p is
    row p * num_images + i).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if cfg is not _NOT_GIVEN:
        guidance_scale = cfg
    _check_codec(lm, codec)
    grid = tuple(grid) if grid is not None else lm.image.default_grid
    if lm.image.grids and grid not in lm.image.grids:
        logging.warning("the model was trained on grids %s, not %s; expect weaker images",
                        [f"{h}x{w}" for h, w in lm.image.grids], f"{grid[0]}x{grid[1]}")
    if isinstance(draft_library, str) and speculative_window:  # without a window: refused below
        draft_library = _read_library(draft_library, grid, lm.config.num_image_codes)
    kwargs = dict(
        guidance_scale=guidance_scale, sampling=sampling_params(temperature, top_k, top_p),
        num_images=num_images, seed=seed, grid=grid, size_prefix=lm.image.size_prefix,
        speculative_window=speculative_window, coupling=coupling, draft_library=draft_library, mesh=lm.mesh,
        progress="image tokens" if progress else None,
    )
    if codec is None:
        pixels_per_code = lm.image.pixels_per_code or DEFAULT_PIXELS_PER_CODE
        return generate_image_codes(lm.model, _vocab(lm), prompts, pixels_per_code=pixels_per_code, **kwargs)
    return _draw(lm.model, _vocab(lm), prompts, codec, **kwargs)


def generate_text(
    lm: Any,
    prompts: str | Sequence[str | Sequence[int]],
    max_new_tokens: int = 128,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    images: Sequence[Any] | None = None,
    codec: Any = None,
    image_size: int | None = None,
    stop_tokens: Sequence[int] | None = None,
    progress: bool = False,
) -> TextGeneration:
    """Continues text prompts (strings or token-id arrays), or answers questions about
    ``images`` (one per prompt) in the chat template; greedy unless ``temperature > 0``.
    A single string or 1-D token array is one prompt; a 2-D array is one prompt per row."""
    if _is_single_prompt(prompts):
        prompts = [prompts]
    if lm.vocab is None and (images is not None or any(isinstance(p, str) for p in prompts)):
        _vocab(lm)
    _check_codec(lm, codec)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return _write(
        lm.model, lm.vocab, prompts, max_new_tokens,
        sampling=sampling_params(temperature, top_k, top_p), seed=seed, images=images,
        codec=codec, image_size=image_size, stop_tokens=stop_tokens, mesh=lm.mesh,
        progress="text tokens" if progress else None,
    )


def caption_images(
    lm: Any,
    images: Sequence[Any],
    max_new_tokens: int = 64,
    *,
    codec: Any = None,
    image_size: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> TextGeneration:
    """Captions ``images`` with upstream's captioning prompt, prompted as the model was
    trained (``lm.image``); greedy unless ``temperature > 0``."""
    _check_codec(lm, codec)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return _caption(
        lm.model, _vocab(lm), images, max_new_tokens, codec=codec, image_size=image_size,
        sampling=sampling_params(temperature, top_k, top_p), seed=seed, size_prefix=lm.image.size_prefix,
        mesh=lm.mesh, progress="caption tokens" if progress else None,
    )
