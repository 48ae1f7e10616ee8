"""Image understanding and captioning: upstream's prompts, greedy answers vs transformers."""

import re

import numpy as np
import PIL.Image
import pytest
import sentencepiece
import torch

from helpers.sample_models import IMAGE_CODES, SPECIAL, TEXT_VOCAB, convert_multimodal, tiny_hf_model, tiny_vocab, tiny_vqgan
from liquid_jax.codec import ImageCodec
from liquid_jax.sample.filters import GREEDY
from liquid_jax.sample.prompts import caption_prompt, understanding_prompt
from liquid_jax.sample.text import caption_images, generate_text
from liquid_jax.tokenizer.image import pad_to_square, resize_center_crop

QUESTION = "what is in this image"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return tiny_vocab(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def sp(vocab):
    return sentencepiece.SentencePieceProcessor(model_file=vocab.text.path)


@pytest.fixture(scope="module")
def models():
    hf = tiny_hf_model("gemma", num_image_codes=IMAGE_CODES, embed_std=0.02, seed=2)
    return hf, convert_multimodal(hf)


def _codes(seed, n=16):
    return np.random.default_rng(seed).integers(0, IMAGE_CODES, n).astype(np.int32)


def test_understanding_prompt_is_gemma_chat_with_image(vocab, sp):
    codes = _codes(0)
    expected = (
        [SPECIAL["bos"]] + sp.encode("<start_of_turn>user\n") + [SPECIAL["boi"]]
        + (codes + TEXT_VOCAB).tolist() + [SPECIAL["eoi"]]
        + sp.encode("\n" + QUESTION + "<end_of_turn>\n<start_of_turn>model\n")
    )
    assert understanding_prompt(vocab, "gemma", codes, QUESTION, (4, 4)) == expected
    assert sp.piece_to_id("<end_of_turn>") in expected and sp.piece_to_id("<start_of_turn>") in expected
    with pytest.raises(ValueError, match="lacks the chat-template tokens"):
        understanding_prompt(vocab, "llama", codes, QUESTION, (4, 4))


def test_caption_prompt_is_upstreams(vocab, sp):
    codes = _codes(1, n=1024)
    image = [SPECIAL["boi"]] + (codes + TEXT_VOCAB).tolist() + [SPECIAL["eoi"]]
    question = sp.encode("The caption of this image is:")
    assert caption_prompt(vocab, codes, (32, 32)) == [SPECIAL["bos"]] + image + question
    small = _codes(1)
    image = [SPECIAL["boi"]] + (small + TEXT_VOCAB).tolist() + [SPECIAL["eoi"]]
    size = sp.encode("Image Size: Width is 64 Height is 64.")
    assert caption_prompt(vocab, small, (4, 4)) == [SPECIAL["bos"]] + image + question
    assert caption_prompt(vocab, small, (4, 4), size_prefix=True) == [SPECIAL["bos"]] + size + image + question


def _hf_answer(hf, prompts, steps, eos):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                      pad_token_id=0, eos_token_id=list(eos))
    out = out[:, width:].numpy()
    return np.pad(out, ((0, 0), (0, steps - out.shape[1])))


def test_understanding_answers_match_transformers(vocab, sp, models):
    hf, model = models
    codes = [_codes(2), _codes(3, n=64)]  # a 4x4 and an 8x8 image in one left-padded batch
    questions = [QUESTION, "a red cat"]
    result = generate_text(model, vocab, questions, 12, sampling=GREEDY, images=codes)
    stops = (sp.piece_to_id("<end_of_turn>"), SPECIAL["eos"])
    grids = [(4, 4), (8, 8)]
    prompts = [understanding_prompt(vocab, "gemma", c, q, g) for c, q, g in zip(codes, questions, grids)]
    expected = _hf_answer(hf, prompts, 12, stops)
    for ours, ref in zip(result.tokens, expected):
        np.testing.assert_array_equal(ours, ref[: len(ours)])
        assert (ref[len(ours):] == 0).all()
    for tokens, text in zip(result.tokens, result.texts):
        body = tokens[:-1] if tokens[-1] in stops else tokens
        text_ids = [int(t) for t in body if t < sp.get_piece_size()]  # drop image codes and unknown rows
        assert re.sub(r"<image:\d+ codes>", "", text) == sp.decode(text_ids)

    captions = caption_images(model, vocab, codes[:1], 12, sampling=GREEDY)
    expected = _hf_answer(hf, [caption_prompt(vocab, codes[0], (4, 4))], 12, (SPECIAL["eos"],))[0]
    np.testing.assert_array_equal(captions.tokens[0], expected[: len(captions.tokens[0])])


def test_pixel_images_are_padded_square_and_encoded(vocab, models):
    _, model = models
    codec = ImageCodec(tiny_vqgan())
    image = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)

    codes = codec.encode(resize_center_crop(pad_to_square(PIL.Image.fromarray(image)), 8))[0]
    assert codes.shape == (16,)
    from_pixels = generate_text(model, vocab, [QUESTION], 6, images=[image], codec=codec, image_size=None)
    from_codes = generate_text(model, vocab, [QUESTION], 6, images=[codes])
    np.testing.assert_array_equal(from_pixels.tokens[0], from_codes.tokens[0])
    with pytest.raises(ValueError, match="need a VQGAN codec"):
        generate_text(model, vocab, [QUESTION], 6, images=[image])
