"""Sequence builders against DESIGN.md section 2, token by token and bit by bit."""

import numpy as np
import pytest

from liquid_jax.data.sequences import CAPTION_PROMPT, T2I_SUFFIXES, SequenceBuilder
from helpers.data_support import GEMMA, TEXT_VOCAB, sp, tok  # noqa: F401 (fixtures)

# DESIGN.md section 2, verbatim.
SPEC_SUFFIXES = [
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
]
CAPTION = "a red cat sits on the blue mat."


def builder(tok, **kw):
    return SequenceBuilder(tokenizer=tok, special=GEMMA, text_vocab_size=TEXT_VOCAB, **kw)


def test_tokenizer_has_gemma_special_ids(sp):
    assert [sp.pad_id(), sp.eos_id(), sp.bos_id()] == [0, 1, 2]
    assert [sp.piece_to_id(p) for p in ("<boi>", "<eoi>", "<unconditional>")] == [7, 8, 9]


def test_suffixes_are_the_upstream_ten():
    assert list(T2I_SUFFIXES) == SPEC_SUFFIXES
    assert CAPTION_PROMPT == "The caption of this image is:"


@pytest.mark.parametrize("suffix", range(10))
def test_text_to_image(tok, sp, suffix):
    codes = np.random.default_rng(suffix).integers(0, 8192, size=12)
    ex = builder(tok).text_to_image(CAPTION, codes, 3, 4, suffix, unconditional=False)
    ids, labels = ex.ids.tolist(), ex.labels.tolist()
    text_ids = sp.encode(CAPTION + SPEC_SUFFIXES[suffix])
    n = len(text_ids)
    assert ids[0] == 2
    assert ids[1 : 1 + n] == text_ids
    assert sp.decode(ids[1 : 1 + n]) == CAPTION + SPEC_SUFFIXES[suffix]
    assert ids[1 + n] == 7
    assert [t - TEXT_VOCAB for t in ids[2 + n : 2 + n + 12]] == codes.tolist()
    assert ids[2 + n + 12 :] == [8, 1]
    assert len(ids) == n + 16
    assert labels == [0] * (n + 2) + [1] * 14


def test_text_to_image_cfg_dropout(tok):
    codes = np.arange(6)
    ex = builder(tok).text_to_image(CAPTION, codes, 2, 3, 4, unconditional=True)
    assert ex.ids.tolist() == [2, 9, 7] + [TEXT_VOCAB + c for c in range(6)] + [8, 1]
    assert ex.labels.tolist() == [0, 0, 0] + [1] * 6 + [1, 1]


def test_caption(tok, sp):
    codes = np.array([0, 8191, 5, 17])
    ex = builder(tok).caption(CAPTION, codes, 2, 2)
    ids, labels = ex.ids.tolist(), ex.labels.tolist()
    prompt, cap = sp.encode(CAPTION_PROMPT), sp.encode(CAPTION)
    expect = [2, 7] + [TEXT_VOCAB + c for c in codes.tolist()] + [8] + prompt + cap + [1]
    assert ids == expect
    assert sp.decode(ids[7:-1]) == "The caption of this image is: " + CAPTION
    assert sp.decode(ids[7 + len(prompt) : -1]) == CAPTION
    assert labels == [0] * (7 + len(prompt)) + [1] * (len(cap) + 1)


def test_text_only(tok, sp):
    text = "two small dogs run across green field.\nchildren laugh."
    ex = builder(tok).text(text)
    assert ex.ids.tolist() == [2] + sp.encode(text) + [1]
    assert sp.decode(ex.ids.tolist()[1:-1]) == text
    assert ex.labels.tolist() == [1] * len(ex.ids)
    no_eos = builder(tok, text_eos=False).text(text)
    assert no_eos.ids.tolist() == [2] + sp.encode(text)


def test_size_prefix(tok, sp):
    codes = np.zeros(8, int)
    b = builder(tok, size_prefix=True, pixels_per_code=16)
    t2i = b.text_to_image(CAPTION, codes, 2, 4, 0, unconditional=False)
    boi = t2i.ids.tolist().index(7)
    assert sp.decode(t2i.ids[1:boi].tolist()) == (
        "Image Size: Width is 64 Height is 32. " + CAPTION + SPEC_SUFFIXES[0]
    )
    uncond = b.text_to_image(CAPTION, codes, 2, 4, 0, unconditional=True).ids.tolist()
    boi = uncond.index(7)
    assert uncond[boi - 1] == 9
    assert sp.decode(uncond[1 : boi - 1]) == "Image Size: Width is 64 Height is 32."
    cap = b.caption(CAPTION, codes, 2, 4)
    ids = cap.ids.tolist()
    boi = ids.index(7)
    assert sp.decode(ids[1:boi]) == "Image Size: Width is 64 Height is 32."
    assert cap.labels[: ids.index(8) + 1].sum() == 0
