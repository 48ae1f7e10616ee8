"""Stage ``tokenizer``: a SentencePiece model with Gemma's special-token layout.

Ids 0-3 are ``<pad> <eos> <bos> <unk>`` and ids 7, 8, 9 are ``<boi> <eoi>
<unconditional>``, as in upstream's renamed Gemma tokenizer, so the rest of the recipe
finds them by name exactly as it does in a real Gemma ``tokenizer.model``.
"""

from __future__ import annotations

import json
import os

import sentencepiece

from liquid_jax.data.sequences import CAPTION_PROMPT, SIZE_PREFIX, T2I_SUFFIXES
from liquid_jax.demo import world as world_stage
from liquid_jax.demo.stages import Context
from liquid_jax.tokenizer.text import SENTENCEPIECE_FILE, SentencePieceTokenizer
from liquid_jax.tokenizer.vocab import default_special_tokens

STAGE = "tokenizer"
# Pieces 4-9, in Gemma's order of reserved tokens; 7-9 are the recipe's.
USER_SYMBOLS = ("<mask>", "<start_of_turn>", "<end_of_turn>", "<boi>", "<eoi>", "<unconditional>")


def training_sentences(context: Context) -> list[str]:
    """Text the tokenizer learns from: the corpus, the captions and the recipe's prompts."""
    sentences = []
    with open(context.path(world_stage.STAGE, "text", "corpus.jsonl"), encoding="utf-8") as f:
        sentences += [json.loads(line)["text"] for line in f]
    with open(context.path(world_stage.STAGE, "train", "captions.jsonl"), encoding="utf-8") as f:
        sentences += [json.loads(line)["caption"] for line in f]
    image = context.config.vqgan.data.image_size
    sentences += [s.strip() for s in T2I_SUFFIXES] + [CAPTION_PROMPT, SIZE_PREFIX.format(w=image, h=image)]
    return sentences


def tokenizer_path(context: Context) -> str:
    return context.path(STAGE, SENTENCEPIECE_FILE)


def run(context: Context) -> dict:
    context.stage_dir(STAGE)
    sentences = training_sentences(context)
    sentencepiece.SentencePieceTrainer.Train(
        sentence_iterator=iter(sentences),
        model_prefix=os.path.splitext(tokenizer_path(context))[0],
        vocab_size=context.config.tokenizer.vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=list(USER_SYMBOLS),
        num_threads=1,
        minloglevel=2,
    )
    tokenizer = SentencePieceTokenizer(tokenizer_path(context))
    special = default_special_tokens("gemma", tokenizer)
    expected = {"pad": 0, "eos": 1, "bos": 2, "boi": 7, "eoi": 8, "unconditional": 9}
    found = {role: getattr(special, role) for role in expected}
    if found != expected:
        raise RuntimeError(f"{tokenizer_path(context)}: special ids {found}, expected Gemma's {expected}")
    lengths = [len(tokenizer.encode(s)) for s in sentences[:2000]]
    return {
        "path": tokenizer_path(context),
        "vocab_size": tokenizer.vocab_size,
        "mean_tokens_per_document": sum(lengths) / len(lengths),
    }
