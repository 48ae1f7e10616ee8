"""Text generation, image understanding and captioning with the shared decode loop."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from liquid_jax.model.transformer import Transformer
from liquid_jax.sample.decode_loop import generate_tokens
from liquid_jax.sample.filters import GREEDY, SamplingParams
from liquid_jax.sample.prompt_images import images_to_codes
from liquid_jax.model.image_format import DEFAULT_PIXELS_PER_CODE
from liquid_jax.sample.prompts import (
    caption_prompt,
    end_of_turn_tokens,
    text_prompt,
    understanding_prompt,
)
from liquid_jax.tokenizer.vocab import MultimodalVocab


@dataclasses.dataclass(frozen=True)
class TextGeneration:
    """Per prompt: the new token ids (ending with the stop token when one was produced)
    and their text (stop token left out; None without a tokenizer)."""

    tokens: list[np.ndarray]
    texts: list[str] | None


def _is_token_ids(prompt: Any) -> bool:
    return not isinstance(prompt, str)


def generate_text(
    model: Transformer,
    vocab: MultimodalVocab | None,
    prompts: Sequence[str | Sequence[int]],
    max_new_tokens: int = 128,
    *,
    sampling: SamplingParams = GREEDY,
    seed: int = 0,
    images: Sequence[Any] | None = None,
    codec: Any = None,
    image_size: int | tuple[int, int] | None = None,
    stop_tokens: Sequence[int] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: str | None = None,
) -> TextGeneration:
    """Continues each prompt with up to ``max_new_tokens`` tokens.

    A prompt is a string (``<bos>`` is prepended) or a sequence of token ids (used as
    is). With ``images`` (one per prompt: a file, PIL image, uint8 pixels or integer
    codes; pixels need ``codec``) each string prompt is a question about its image,
    asked in the base model's chat template, and generation stops at the end of the
    model's turn; otherwise at EOS. ``stop_tokens`` overrides the stop set. ``vocab``
    may be None when every prompt is token ids (no text is decoded then).
    """
    prompts = list(prompts)
    if vocab is None and (images is not None or not all(map(_is_token_ids, prompts))):
        raise ValueError("string prompts and images need a tokenizer (vocab)")
    family = model.config.family
    if images is None:
        rows = [list(map(int, p)) if _is_token_ids(p) else text_prompt(vocab, p) for p in prompts]
        default_stop = (model.config.special_tokens.eos,)
    else:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images for {len(prompts)} prompts; give one image per prompt")
        if any(_is_token_ids(p) for p in prompts):
            raise ValueError("with images, prompts must be question strings (token-id prompts are used as is)")
        codes = images_to_codes(images, codec, image_size)
        rows = [
            understanding_prompt(vocab, family, c.reshape(-1), q, c.shape) for c, q in zip(codes, prompts)
        ]
        default_stop = end_of_turn_tokens(vocab, family)
    stop = tuple(default_stop if stop_tokens is None else stop_tokens)
    return _run(model, vocab, rows, max_new_tokens, sampling, seed, stop, mesh, progress)


def caption_images(
    model: Transformer,
    vocab: MultimodalVocab,
    images: Sequence[Any],
    max_new_tokens: int = 64,
    *,
    codec: Any = None,
    image_size: int | tuple[int, int] | None = None,
    sampling: SamplingParams = GREEDY,
    seed: int = 0,
    size_prefix: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    progress: str | None = None,
) -> TextGeneration:
    """Captions with upstream's ``<boi>`` codes ``<eoi>`` "The caption of this image is:",
    after the size sentence if the model was trained with it (``size_prefix``). Images are
    read as ``images_to_codes`` reads them; the prompt states each one's own grid."""
    codes = images_to_codes(images, codec, image_size)
    per_code = DEFAULT_PIXELS_PER_CODE if codec is None else codec.pixels_per_code
    rows = [caption_prompt(vocab, c.reshape(-1), c.shape, per_code, size_prefix) for c in codes]
    return _run(model, vocab, rows, max_new_tokens, sampling, seed, (vocab.special.eos,), mesh, progress)


def _run(model, vocab, rows, max_new_tokens, sampling, seed, stop, mesh, progress) -> TextGeneration:
    result = generate_tokens(
        model, rows, max_new_tokens, sampling=sampling, seed=seed, stop_tokens=stop,
        mesh=mesh, progress=progress,
    )
    tokens = [row[:length] for row, length in zip(result.tokens, result.lengths)]
    texts = None
    if vocab is not None:
        texts = [_decode(vocab, t[:-1] if len(t) and t[-1] in stop else t) for t in tokens]
    return TextGeneration(tokens=tokens, texts=texts)


def _decode(vocab: MultimodalVocab, tokens: np.ndarray) -> str:
    # Embedding rows past the tokenizer's entries (padding of the base model's table)
    # have no text; a sampled one is left out rather than failing the whole batch.
    unknown = (tokens >= vocab.text.vocab_size) & (tokens < vocab.text_vocab_size)
    return vocab.decode(tokens[~unknown])
