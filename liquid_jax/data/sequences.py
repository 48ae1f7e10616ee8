"""Per-example training sequences, exactly as the upstream Liquid collator builds them.

Every builder returns an ``Example``: the token ids of one document and, per id, whether
predicting that id is trained (``labels``). Shifting into inputs/targets happens in
``packing``. Formats (all special ids, ``<bos>`` included, come from ``SpecialTokens``;
upstream's tokenizer adds ``<bos>``, here it is added explicitly so that tokenizers
without a BOS of their own, such as Qwen2.5's, behave the same):

* text-to-image: ``<bos>`` caption + suffix ``<boi>`` codes ``<eoi><eos>``; with CFG
  dropout the text (caption and suffix) becomes ``<unconditional>``. Loss on codes,
  ``<eoi>``, ``<eos>``.
* caption: ``<bos><boi>`` codes ``<eoi>`` "The caption of this image is:" caption
  ``<eos>``. Loss on caption and ``<eos>``. Prompt and caption are tokenized
  separately so the loss boundary never falls inside a token.
* text: ``<bos>`` text (+ ``<eos>`` unless disabled). Loss on all of it.
* size prefix (optional, upstream's multi-resolution variant): "Image Size: Width is
  {w} Height is {h}." in pixels, right after ``<bos>`` in both image modes; it is kept
  under CFG dropout so unconditional samples still know their grid.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np

from liquid_jax.model.config import SpecialTokens

T2I_SUFFIXES: tuple[str, ...] = (
    " Generate an image based on this description.",
    " Create an image that captures the provided description.",
    " Based on the previous text, produce a corresponding image.",
    " Please illustrate the above text with a picture.",
    " Translate the given description into a image.",
    " Construct a visual representation of the above description.",
    " Create a image that matches the text.",
    " Formulate a visual expression that reflects the narrative just provided.",
    " Give a visual depiction based on the above sentences.",
    " Create an image using the information mentioned above as guidance.",
)
CAPTION_PROMPT = "The caption of this image is:"
SIZE_PREFIX = "Image Size: Width is {w} Height is {h}."


class Encoder(Protocol):
    """The part of a text tokenizer the builders use."""

    def encode(self, text: str) -> list[int]: ...


@dataclasses.dataclass(frozen=True)
class Example:
    """Token ids of one document and the 0/1 loss flag of each id."""

    ids: np.ndarray  # int32 [n]
    labels: np.ndarray  # int32 [n]; 1 where predicting ids[i] is trained

    def __len__(self) -> int:
        return len(self.ids)


def _join(parts: Sequence[tuple[Sequence[int], int]]) -> Example:
    ids = np.concatenate([np.asarray(p, np.int32) for p, _ in parts])
    labels = np.concatenate([np.full(len(p), flag, np.int32) for p, flag in parts])
    return Example(ids=ids, labels=labels)


@dataclasses.dataclass(frozen=True)
class SequenceBuilder:
    """Builds the three kinds of Liquid training sequences for one tokenizer.

    ``pixels_per_code`` converts a code grid to the pixel size the size prefix states
    (the VQGAN's downsampling factor).
    """

    tokenizer: Encoder
    special: SpecialTokens
    text_vocab_size: int
    size_prefix: bool = False
    pixels_per_code: int = 16
    text_eos: bool = True

    def image_tokens(self, codes: np.ndarray) -> np.ndarray:
        """Token ids of image codes (code c is token text_vocab_size + c)."""
        return np.asarray(codes, np.int32) + self.text_vocab_size

    def _size_text(self, h: int, w: int) -> str:
        return SIZE_PREFIX.format(w=w * self.pixels_per_code, h=h * self.pixels_per_code)

    def text_to_image(
        self, caption: str, codes: np.ndarray, h: int, w: int, suffix: int, unconditional: bool
    ) -> Example:
        """``<bos>`` [size] caption + suffix ``<boi>`` codes ``<eoi><eos>``."""
        s = self.special
        if unconditional:
            head = [s.bos]
            if self.size_prefix:
                head += self.tokenizer.encode(self._size_text(h, w))
            head += [s.unconditional]
        else:
            text = caption + T2I_SUFFIXES[suffix]
            if self.size_prefix:
                text = self._size_text(h, w) + " " + text
            head = [s.bos] + self.tokenizer.encode(text)
        return _join(
            [(head + [s.boi], 0), (self.image_tokens(codes), 1), ([s.eoi, s.eos], 1)]
        )

    def caption(self, caption: str, codes: np.ndarray, h: int, w: int) -> Example:
        """``<bos>`` [size] ``<boi>`` codes ``<eoi>`` prompt caption ``<eos>``."""
        s = self.special
        head = [s.bos]
        if self.size_prefix:
            head += self.tokenizer.encode(self._size_text(h, w))
        return _join(
            [
                (head + [s.boi], 0),
                (self.image_tokens(codes), 0),
                ([s.eoi] + self.tokenizer.encode(CAPTION_PROMPT), 0),
                (self.tokenizer.encode(caption) + [s.eos], 1),
            ]
        )

    def text(self, text: str) -> Example:
        """``<bos>`` text [``<eos>``], loss on every token."""
        ids = [self.special.bos] + self.tokenizer.encode(text)
        if self.text_eos:
            ids.append(self.special.eos)
        return _join([(ids, 1)])
