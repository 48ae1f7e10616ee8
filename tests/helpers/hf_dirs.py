"""Tiny Hugging Face model directories on disk (sharded safetensors + tokenizer files).

Tokenizers are trained inside the tests: a SentencePiece model with Gemma's id layout
for ids 0..9, and a byte-level BPE tokenizer.json with Llama 3's special tokens.
"""

from __future__ import annotations

import json

import numpy as np
import sentencepiece as spm
import tokenizers
import torch
import transformers
from tokenizers import models, pre_tokenizers, trainers

from helpers import sample_models

CORPUS = [
    "A red circle sits to the left of a blue square.",
    "The caption of this image is: a small green triangle on a white background.",
    "Generate an image based on this description.",
    "Liquid is a language model that reads, writes and draws.",
    "Two yellow stars and one purple hexagon float above the water.",
] * 40
SP_VOCAB = 400  # 10 Gemma-like specials + 256 byte pieces + merges


GEMMA_CHAT_MARKERS = ["<start_of_turn>", "<end_of_turn>"]


def train_gemma_like_sentencepiece(directory, vocab_size: int = SP_VOCAB, chat: bool = False) -> str:
    """A tiny SentencePiece model with Gemma's id layout for ids 0..9 (and Gemma's chat
    markers after them with ``chat``); byte pieces only when ``vocab_size`` has room."""
    prefix = str(directory / "tokenizer")
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(CORPUS),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>", "<2mass>", "[@BOS@]", "<unused0>", "<unused1>", "<unused2>"]
        + (GEMMA_CHAT_MARKERS if chat else []),
        byte_fallback=vocab_size >= SP_VOCAB,
        minloglevel=2,
    )
    return prefix + ".model"


def build_llama_like_tokenizer_json(directory, reserved_layout="3.1") -> str:
    """A tiny byte-level BPE tokenizer.json with Llama 3 style special tokens."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    base = tok.get_vocab_size()
    third = "<|finetune_right_pad_id|>" if reserved_layout == "3.1" else "<|reserved_special_token_2|>"
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                "<|reserved_special_token_1|>", third]
    if reserved_layout == "3.1":
        specials.append("<|reserved_special_token_2|>")
    tok.add_special_tokens(specials)
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", base)]
    )
    path = directory / "tokenizer.json"
    tok.save(str(path))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|end_of_text|>"}}
    ))
    return str(path)


LLAMA_SPECIALS = 6  # special tokens appended by build_llama_like_tokenizer_json("3.1")


def tiny_hf_model(family: str, vocab_size: int, *, seed: int = 0, d_model: int = 32,
                  layers: int = 2) -> transformers.PreTrainedModel:
    """The sampling tests' random model (Gemma tied, Llama untied) with ``vocab_size`` rows.

    That helper sizes the vocabulary as TEXT_VOCAB + num_image_codes; Llama's BOS/EOS
    are moved to where build_llama_like_tokenizer_json puts them.
    """
    model = sample_models.tiny_hf_model(
        family, num_image_codes=vocab_size - sample_models.TEXT_VOCAB, seed=seed,
        d_model=d_model, layers=layers,
    )
    if family == "llama":
        for config in (model.config, model.generation_config):
            config.bos_token_id = vocab_size - LLAMA_SPECIALS
            config.eos_token_id = vocab_size - LLAMA_SPECIALS + 1
            config.pad_token_id = None
    return model


def write_hf_dir(directory, model: transformers.PreTrainedModel, *, tokenizer: bool = True,
                 max_shard_size: str = "64KB") -> str:
    """save_pretrained (sharded safetensors + index) plus the family's tokenizer files."""
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    if tokenizer and model.config.model_type == "gemma":
        prefix = train_gemma_like_sentencepiece(directory)
        (directory / "tokenizer.vocab").unlink()
        assert prefix.endswith("tokenizer.model")
    elif tokenizer:
        path = build_llama_like_tokenizer_json(directory)
        assert tokenizers.Tokenizer.from_file(path).get_vocab_size() == model.config.vocab_size
    return str(directory)


def hf_logits(model: transformers.PreTrainedModel, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()


def random_tokens(high: int, shape=(2, 12), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, high, shape).astype(np.int32)
