"""Shared fixtures of the data tests: a SentencePiece model with Gemma's special ids,
random captions and documents, and shards of records."""

from __future__ import annotations

import os

import numpy as np
import pytest
import sentencepiece as spm

from liquid_jax.data import records
from liquid_jax.data.shards import write_shard
from liquid_jax.model.config import SpecialTokens
from liquid_jax.tokenizer.text import SentencePieceTokenizer

GEMMA = SpecialTokens()  # bos 2, eos 1, pad 0, boi 7, eoi 8, unconditional 9
WORDS = (
    "a red cat sits on the blue mat near an old wooden door while two small dogs run across "
    "green field under bright morning sun and children laugh at strange birds flying over "
    "quiet river painting of mountain city street night rain umbrella coffee cup table "
    "image picture photo description generate create visual text above based previous"
).split()
TEXT_VOCAB = 400  # tokenizer size; image code c is token TEXT_VOCAB + c


def sentence(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words)) + "."


def train_tokenizer(directory: str) -> SentencePieceTokenizer:
    """A byte-fallback BPE model whose ids 0..9 match Gemma's special tokens."""
    rng = np.random.default_rng(0)
    corpus = os.path.join(directory, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(2000):
            f.write(sentence(rng, int(rng.integers(3, 15))) + "\n")
    prefix = os.path.join(directory, "sp")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        vocab_size=TEXT_VOCAB,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",  # keep newlines, as Gemma does
        remove_extra_whitespaces=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["<unused_4>", "<unused_5>", "<unused_6>", "<boi>", "<eoi>", "<unconditional>"],
        minloglevel=2,
    )
    return SentencePieceTokenizer(prefix + ".model")


def image_records(rng: np.random.Generator, n: int, grid: tuple[int, int], codebook: int, tag: str):
    out = []
    for i in range(n):
        h, w = grid
        out.append(
            records.ImageRecord(
                caption=sentence(rng, int(rng.integers(3, 12))),
                codes=rng.integers(0, codebook, size=h * w).astype(np.uint16),
                h=h,
                w=w,
                key=f"{tag}-{i}",
            )
        )
    return out


def text_records(rng: np.random.Generator, n: int, words: tuple[int, int], tag: str):
    return [
        records.TextRecord(text=sentence(rng, int(rng.integers(*words))), key=f"{tag}-{i}")
        for i in range(n)
    ]


def write_shards(directory: str, prefix: str, encoded: list[bytes], num_shards: int) -> list[str]:
    """Deals encoded records round-robin into ``num_shards`` shards."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, records.shard_name(prefix, s, num_shards)) for s in range(num_shards)]
    for s, path in enumerate(paths):
        write_shard(path, encoded[s::num_shards])
    return paths


def write_image_shards(directory: str, recs, num_shards: int) -> list[str]:
    return write_shards(directory, "img", [records.encode_image_record(r) for r in recs], num_shards)


def write_text_shards(directory: str, recs, num_shards: int) -> list[str]:
    return write_shards(directory, "txt", [records.encode_text_record(r) for r in recs], num_shards)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer(str(tmp_path_factory.mktemp("sp")))


@pytest.fixture(scope="module")
def sp(tok):
    return spm.SentencePieceProcessor(model_file=tok.path)
