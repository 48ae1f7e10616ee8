"""Text tokenizers (SentencePiece, tokenizer.json) and the multimodal vocabulary."""

import numpy as np
import pytest
import sentencepiece as spm
import tokenizers

from helpers.hf_dirs import SP_VOCAB, build_llama_like_tokenizer_json, train_gemma_like_sentencepiece
from liquid_jax.model.config import SpecialTokens
from liquid_jax.tokenizer import (
    HFTokenizer,
    MultimodalVocab,
    SentencePieceTokenizer,
    TextTokenizer,
    default_special_tokens,
    load_text_tokenizer,
)

def test_sentencepiece_backend_matches_sentencepiece(tmp_path):
    path = train_gemma_like_sentencepiece(tmp_path)
    ref = spm.SentencePieceProcessor(model_file=path)
    tok = load_text_tokenizer(path)
    assert isinstance(tok, SentencePieceTokenizer) and isinstance(tok, TextTokenizer)
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert [tok.id_to_piece(i) for i in (7, 8, 9)] == ["<unused0>", "<unused1>", "<unused2>"]
    assert tok.vocab_size == ref.get_piece_size() == SP_VOCAB
    text = "A blue hexagon reads the water."
    assert tok.encode(text) == ref.encode(text)
    assert tok.encode(text, add_bos=True) == [2] + ref.encode(text)
    assert tok.decode(tok.encode(text, add_bos=True) + [1]) == text
    assert tok.piece_to_id("<unused1>") == 8
    assert tok.piece_to_id("<never-seen>") is None
    with pytest.raises(ValueError, match=r"\[400\].*tokenizer.model"):
        tok.decode([5, SP_VOCAB])


def test_hf_backend_matches_tokenizers(tmp_path):
    path = build_llama_like_tokenizer_json(tmp_path)
    ref = tokenizers.Tokenizer.from_file(path)
    tok = load_text_tokenizer(tmp_path)  # a directory with only tokenizer.json
    assert isinstance(tok, HFTokenizer)
    text = "Two red stars draw a circle."
    plain = ref.encode(text, add_special_tokens=False).ids
    assert tok.encode(text) == plain
    # The file's post-processor adds BOS; encode(add_bos=True) gives the same ids.
    assert tok.encode(text, add_bos=True) == ref.encode(text).ids
    assert tok.bos_id == ref.token_to_id("<|begin_of_text|>")
    assert tok.eos_id == ref.token_to_id("<|end_of_text|>")
    assert tok.pad_id is None
    assert tok.decode(tok.encode(text, add_bos=True) + [tok.eos_id]) == text
    assert tok.vocab_size == ref.get_vocab_size()


def test_directory_prefers_sentencepiece_and_errors(tmp_path):
    train_gemma_like_sentencepiece(tmp_path)
    build_llama_like_tokenizer_json(tmp_path)
    assert isinstance(load_text_tokenizer(tmp_path), SentencePieceTokenizer)
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    assert isinstance(load_text_tokenizer(tmp_path), HFTokenizer)  # falls back to the json
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_text_tokenizer(empty)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        load_text_tokenizer(broken)


def test_default_special_tokens_by_name(tmp_path):
    sp = load_text_tokenizer(train_gemma_like_sentencepiece(tmp_path))
    assert default_special_tokens("gemma", sp) == SpecialTokens(bos=2, eos=1, pad=0, boi=7, eoi=8, unconditional=9)
    assert default_special_tokens("gemma2") == default_special_tokens("gemma", sp)

    d31, d30 = tmp_path / "l31", tmp_path / "l30"
    d31.mkdir(), d30.mkdir()
    t31 = load_text_tokenizer(build_llama_like_tokenizer_json(d31, "3.1"))
    t30 = load_text_tokenizer(build_llama_like_tokenizer_json(d30, "3.0"))
    s31 = default_special_tokens("llama", t31)
    s30 = default_special_tokens("llama", t30)
    assert s31.boi == t31.piece_to_id("<|reserved_special_token_0|>")
    assert s31.unconditional == t31.piece_to_id("<|reserved_special_token_2|>")
    assert s31.pad == t31.piece_to_id("<|finetune_right_pad_id|>")
    assert s30.unconditional == t30.piece_to_id("<|reserved_special_token_2|>") == s30.eoi + 1
    assert s30.pad == s30.eos  # Llama 3.0 has no pad token
    # Without a tokenizer: the released Llama 3.1+/Qwen2.5 ids.
    assert default_special_tokens("llama") == SpecialTokens(128000, 128001, 128004, 128002, 128003, 128005)
    assert default_special_tokens("qwen2").boi == 151652
    with pytest.raises(ValueError, match=r"endoftext.*bos token of family .qwen2"):
        default_special_tokens("qwen2", t31)
    with pytest.raises(ValueError, match="mistral"):
        default_special_tokens("mistral")


@pytest.fixture
def vocab(tmp_path):
    sp = load_text_tokenizer(train_gemma_like_sentencepiece(tmp_path))
    # The text vocabulary is larger than the tokenizer, as for Qwen2.5's padded embedding.
    return MultimodalVocab(sp, default_special_tokens("gemma", sp), text_vocab_size=408,
                           num_image_codes=16)


def test_image_code_mapping(vocab):
    codes = np.arange(16).reshape(4, 4)
    tokens = vocab.image_tokens(codes)
    assert tokens.shape == (4, 4) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, codes + 408)
    np.testing.assert_array_equal(vocab.image_codes(tokens), codes)
    assert vocab.vocab_size == 424
    np.testing.assert_array_equal(vocab.is_image_token([0, 407, 408, 423, 424]), [0, 0, 1, 1, 0])
    with pytest.raises(ValueError, match=r"\[16, -1\].*\[0, 16\)"):
        vocab.image_tokens([3, 16, -1])
    with pytest.raises(ValueError, match=r"\[7, 424\] are not image tokens"):
        vocab.image_codes([410, 7, 424])


def test_encode_and_decode_mixed(vocab):
    prompt = "A red circle. Generate an image based on this description.<boi>"
    ids = vocab.encode_text(prompt, add_bos=True)
    text_ids = vocab.text.encode("A red circle. Generate an image based on this description.")
    assert ids == [2] + text_ids + [7]
    assert vocab.encode_text("<unconditional><boi>") == [9, 7]

    codes = np.array([3, 0, 15, 8])
    seq = ids + vocab.image_tokens(codes).tolist() + [8] + vocab.encode_text("a square") + [1]
    parts = vocab.segments(seq)
    assert len(parts) == 3
    assert parts[0] == prompt
    np.testing.assert_array_equal(parts[1], codes)
    assert parts[2] == "<eoi>a square"
    assert vocab.decode(seq) == prompt + "<image:4 codes><eoi>a square"
    with pytest.raises(ValueError, match=r"\[405\]"):
        vocab.decode([405])  # an embedding-padding id the tokenizer does not know


def test_vocab_validates_sizes_and_ids(tmp_path):
    sp = load_text_tokenizer(train_gemma_like_sentencepiece(tmp_path))
    with pytest.raises(ValueError, match="more than the text vocabulary size 300"):
        MultimodalVocab(sp, default_special_tokens("gemma", sp), text_vocab_size=300)
    with pytest.raises(ValueError, match="boi=500"):
        MultimodalVocab(sp, SpecialTokens(boi=500), text_vocab_size=SP_VOCAB)
