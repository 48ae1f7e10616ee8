"""liquid_jax.load / LiquidLM against transformers."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import liquid_jax
from helpers.hf_dirs import LLAMA_SPECIALS, hf_logits, random_tokens, tiny_hf_model, write_hf_dir
from liquid_jax.convert import hf
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer import HFTokenizer, MultimodalVocab

VOCAB = 300 + LLAMA_SPECIALS


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny untied Llama directory with tokenizer.json, its torch model and a
    liquid_jax checkpoint of it extended by 40 image codes."""
    root = tmp_path_factory.mktemp("api")
    model = tiny_hf_model("llama", VOCAB)
    src = write_hf_dir(root / "hf", model)
    hf.convert_hf_to_liquid(src, root / "ck", extend_image_codes=40, progress=False)
    return model, src, str(root / "ck")


def test_load_hf_directory(llama):
    model, src, _ = llama
    lm = liquid_jax.load(src, extend_image_codes=0, progress=False)
    assert isinstance(lm, liquid_jax.LiquidLM)
    assert lm.config.vocab_size == VOCAB and lm.config.num_image_codes == 0
    tokens = random_tokens(VOCAB)
    logits = lm.logits(tokens)
    assert logits.dtype == jnp.float32 and logits.shape == (2, 12, VOCAB)
    np.testing.assert_allclose(np.asarray(logits), hf_logits(model, tokens), rtol=1e-4, atol=1e-4)
    vocab = lm.vocab
    assert isinstance(vocab, MultimodalVocab) and isinstance(vocab.text, HFTokenizer)
    assert vocab.text.id_to_piece(lm.config.special_tokens.boi) == "<|reserved_special_token_0|>"
    assert vocab.special.bos == vocab.text.bos_id == model.config.bos_token_id


def test_load_checkpoint_extended_with_tokenizer(llama):
    model, _, ck = llama
    lm = liquid_jax.load(ck, progress=False)
    assert (lm.config.vocab_size, lm.config.num_image_codes) == (VOCAB + 40, 40)
    assert lm.vocab.vocab_size == VOCAB + 40
    ids = lm.vocab.encode_text("a red circle<boi>", add_bos=True)
    tokens = np.array([ids + lm.vocab.image_tokens([0, 39, 5]).tolist()])
    logits = np.asarray(lm.logits(tokens))
    assert logits.shape == (1, tokens.shape[1], VOCAB + 40)
    text_only = random_tokens(VOCAB)
    np.testing.assert_allclose(np.asarray(lm.logits(text_only))[..., :VOCAB], hf_logits(model, text_only),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"outside \[0, 346\)"):
        lm.logits([[1, VOCAB + 40]])


def test_bfloat16_and_padding_override(llama):
    model, _, ck = llama
    lm = liquid_jax.load(ck, dtype="bfloat16", vocab_pad_multiple=128, progress=False)
    assert lm.config.padded_vocab_size == 384
    emb = lm.model.embed.embedding.get_value()
    assert emb.dtype == jnp.bfloat16 and emb.shape == (384, 32)
    tokens = random_tokens(VOCAB)
    logits = np.asarray(lm.logits(tokens))
    assert logits.dtype == np.float32 and logits.shape == (2, 12, VOCAB + 40)
    want = hf_logits(model, tokens)
    err = np.abs(logits[..., :VOCAB] - want).max() / np.abs(want).max()
    assert err < 0.05, err


def test_load_on_mesh(llama):
    _, _, ck = llama
    mesh = make_mesh((2, 2, 2))
    lm = liquid_jax.load(ck, mesh=mesh, vocab_pad_multiple=8, progress=False)
    head = lm.model.lm_head.weight.get_value()
    assert head.sharding.spec == P("tensor", "fsdp") and len(head.addressable_shards) == 8
    kernel = lm.model.layers.mlp.gate_proj.kernel.get_value()
    assert kernel.sharding.spec == P(None, "fsdp", "tensor")
    tokens = random_tokens(VOCAB, shape=(4, 8))
    sharded = np.asarray(lm.logits(tokens))
    single = np.asarray(liquid_jax.load(ck, progress=False).logits(tokens))
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


def test_no_tokenizer_and_bad_paths(tmp_path):
    model = tiny_hf_model("gemma", 64, d_model=16, layers=1)
    src = write_hf_dir(tmp_path / "hf", model, tokenizer=False)
    lm = liquid_jax.load(src, extend_image_codes=8, progress=False)
    assert lm.vocab is None and lm.config.vocab_size == 72
    with pytest.raises(FileNotFoundError, match="neither a liquid_jax checkpoint"):
        liquid_jax.load(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        liquid_jax.load(src, dtype="float16")


def test_import_is_light_and_exports():
    code = (
        "import sys, liquid_jax\n"
        "heavy = sorted({'torch', 'jax', 'flax', 'transformers'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
        "print(sorted(liquid_jax.__all__))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "load_vqgan" in result.stdout
    from liquid_jax import api

    assert liquid_jax.load_vqgan is api.load_vqgan
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        liquid_jax.nope  # noqa: B018
