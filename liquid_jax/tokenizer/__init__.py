"""Text tokenizers and the multimodal (text + image code) vocabulary."""

from liquid_jax.tokenizer.text import (
    HFTokenizer,
    SentencePieceTokenizer,
    TextTokenizer,
    load_text_tokenizer,
)
from liquid_jax.tokenizer.vocab import MultimodalVocab, default_special_tokens

__all__ = [
    "HFTokenizer",
    "MultimodalVocab",
    "SentencePieceTokenizer",
    "TextTokenizer",
    "default_special_tokens",
    "load_text_tokenizer",
]
