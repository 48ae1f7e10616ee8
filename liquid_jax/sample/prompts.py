"""Prompt token sequences for the three sampling tasks.

Text-to-image and captioning prompts are the training sequences of
``liquid_jax.data.sequences`` cut where the model takes over, so inference always
matches training: conditional ``<bos>`` [size] prompt + " Generate an image based on
this description." ``<boi>``, unconditional ``<bos>`` [size] ``<unconditional><boi>``,
caption ``<bos>`` [size] ``<boi>`` codes ``<eoi>`` "The caption of this image is:".
The size prefix is written when the model was trained with it (its ``ImageFormat``),
whatever the grid.

Understanding wraps ``<boi>`` codes ``<eoi>`` and the question in the base model's chat
template (Gemma's is upstream's); the tokenizer must know the template's markers.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from liquid_jax.data.sequences import SequenceBuilder
from liquid_jax.model.image_format import DEFAULT_GRID, DEFAULT_PIXELS_PER_CODE
from liquid_jax.tokenizer.vocab import MultimodalVocab

T2I_SUFFIX = 0  # index into T2I_SUFFIXES: upstream samples with the first instruction


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A single user turn: BOS, ``user_prefix``, the content, ``assistant_prefix``.

    ``end_of_turn`` is the piece the model emits to finish its answer (a stop token
    besides EOS).
    """

    user_prefix: str
    assistant_prefix: str
    end_of_turn: str

    @property
    def markers(self) -> tuple[str, ...]:
        return tuple(sorted(set(re.findall(r"<[^<>\s]+>", self.user_prefix + self.assistant_prefix))))


_GEMMA_CHAT = ChatTemplate(
    "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", "<end_of_turn>"
)
CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    "gemma": _GEMMA_CHAT,
    "gemma2": _GEMMA_CHAT,
    "llama": ChatTemplate(
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    "qwen2": ChatTemplate(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\n",
        "<|im_end|>\n<|im_start|>assistant\n",
        "<|im_end|>",
    ),
}


def chat_template(family: str) -> ChatTemplate:
    if family not in CHAT_TEMPLATES:
        raise ValueError(f"no chat template for family {family!r}; known: {sorted(CHAT_TEMPLATES)}")
    return CHAT_TEMPLATES[family]


def _builder(vocab: MultimodalVocab, size_prefix: bool, pixels_per_code: int) -> SequenceBuilder:
    return SequenceBuilder(
        tokenizer=vocab.text,
        special=vocab.special,
        text_vocab_size=vocab.text_vocab_size,
        size_prefix=size_prefix,
        pixels_per_code=pixels_per_code,
    )


def _prompt_part(example) -> list[int]:
    """The untrained head of a training sequence: what the model is given."""
    return example.ids[example.labels == 0].tolist()


def text_to_image_prompts(
    vocab: MultimodalVocab,
    prompt: str,
    grid: tuple[int, int] = DEFAULT_GRID,
    pixels_per_code: int = DEFAULT_PIXELS_PER_CODE,
    size_prefix: bool = False,
) -> tuple[list[int], list[int]]:
    """(conditional, unconditional) token lists, each ending with ``<boi>``."""
    builder = _builder(vocab, size_prefix, pixels_per_code)
    no_codes = np.zeros((0,), np.int32)
    h, w = grid
    conditional = builder.text_to_image(prompt, no_codes, h, w, T2I_SUFFIX, unconditional=False)
    unconditional = builder.text_to_image("", no_codes, h, w, T2I_SUFFIX, unconditional=True)
    return _prompt_part(conditional), _prompt_part(unconditional)


def caption_prompt(
    vocab: MultimodalVocab,
    codes: np.ndarray,
    grid: tuple[int, int] = DEFAULT_GRID,
    pixels_per_code: int = DEFAULT_PIXELS_PER_CODE,
    size_prefix: bool = False,
) -> list[int]:
    """``<bos>`` [size] ``<boi>`` codes ``<eoi>`` "The caption of this image is:"."""
    h, w = grid
    builder = _builder(vocab, size_prefix, pixels_per_code)
    return _prompt_part(builder.caption("", _flat_codes(codes, grid), h, w))


def _flat_codes(codes: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    codes = np.asarray(codes).reshape(-1)
    if codes.size != grid[0] * grid[1]:
        raise ValueError(f"{codes.size} image codes do not fill a {grid[0]}x{grid[1]} grid")
    return codes


def _check_markers(vocab: MultimodalVocab, template: ChatTemplate) -> None:
    missing = [m for m in template.markers if vocab.text.piece_to_id(m) is None]
    if missing:
        raise ValueError(f"tokenizer {vocab.text.path} lacks the chat-template tokens {missing}")


def understanding_prompt(
    vocab: MultimodalVocab, family: str, codes: np.ndarray, question: str,
    grid: tuple[int, int] = DEFAULT_GRID,
) -> list[int]:
    """``<bos>`` user-prefix ``<boi>`` codes ``<eoi>`` "\\n" question assistant-prefix."""
    template = chat_template(family)
    _check_markers(vocab, template)
    image = [vocab.special.boi, *vocab.image_tokens(_flat_codes(codes, grid)).tolist(), vocab.special.eoi]
    return (
        [vocab.special.bos]
        + vocab.encode_text(template.user_prefix)
        + image
        + vocab.encode_text("\n" + question + template.assistant_prefix)
    )


def end_of_turn_tokens(vocab: MultimodalVocab, family: str) -> tuple[int, ...]:
    """Tokens that end a chat answer: the template's end-of-turn piece (if the
    tokenizer has it) and EOS."""
    end = vocab.text.piece_to_id(chat_template(family).end_of_turn)
    return tuple(t for t in (end, vocab.special.eos) if t is not None)


def text_prompt(vocab: MultimodalVocab, text: str) -> list[int]:
    """``<bos>`` text, the form text-only training sequences start with."""
    return vocab.encode_text(text, add_bos=True)
