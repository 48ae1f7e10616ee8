"""LiquidLM.generate_images / generate_text on a tiny converted checkpoint."""

import os

import numpy as np
import pytest
import sentencepiece
import torch
import transformers

import liquid_jax
from helpers.sample_models import IMAGE_CODES, tiny_checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sample_api")
    checkpoint, vqgan = tiny_checkpoints(str(directory))
    return str(directory), checkpoint, vqgan


@pytest.fixture(scope="module")
def lm(checkpoints):
    return liquid_jax.load(checkpoints[1], progress=False)


def test_generate_images_returns_codes_and_decoded_pixels(lm, checkpoints):
    codec = liquid_jax.load_vqgan(checkpoints[2])
    result = lm.generate_images(["a red cat", "blue water"], codec, num_images=2, grid=(4, 4), seed=1,
                                top_k=16, progress=False)
    assert result.codes.shape == (4, 16) and result.images.shape == (4, 8, 8, 3)
    assert result.images.dtype == np.uint8
    assert result.codes.min() >= 0 and result.codes.max() < IMAGE_CODES
    np.testing.assert_array_equal(result.images, codec.decode(result.codes, grid=(4, 4)))
    again = lm.generate_images(["a red cat", "blue water"], num_images=2, grid=(4, 4), seed=1, top_k=16,
                               progress=False)
    np.testing.assert_array_equal(again.codes, result.codes)
    assert again.images is None


def test_generate_text_greedy_matches_transformers(lm, checkpoints):
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(checkpoints[0], "hf")).eval()
    prompt = [lm.config.special_tokens.bos] + lm.vocab.encode_text("a red cat sits on")
    result = lm.generate_text(["a red cat sits on"], 10)
    from_ids = lm.generate_text(np.array(prompt), 10)  # one 1-D token array is one prompt
    expected = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                           eos_token_id=lm.config.special_tokens.eos, pad_token_id=0)[0, len(prompt):].numpy()
    np.testing.assert_array_equal(result.tokens[0], expected)
    np.testing.assert_array_equal(from_ids.tokens[0], expected)
    known = [int(t) for t in expected if t < lm.vocab.text.vocab_size and t != lm.config.special_tokens.eos]
    assert result.texts[0] == sentencepiece.SentencePieceProcessor(model_file=lm.vocab.text.path).decode(known)
    sampled = lm.generate_text(["a red cat"], 10, temperature=1.0, top_p=0.9, seed=3)
    assert len(sampled.tokens[0]) >= 1
