"""Text-to-image with guidance against a PyTorch version of upstream's sampling loop."""

import numpy as np
import pytest

from helpers.sample_models import IMAGE_CODES, SPECIAL, TEXT_VOCAB, convert_multimodal, tiny_hf_model, tiny_vocab
from helpers.upstream_t2i import upstream_t2i
from liquid_jax.sample import decode_loop
from liquid_jax.sample.filters import SamplingParams
from liquid_jax.sample.images import generate_image_codes, guided_batch


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    return tiny_vocab(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module", params=["gemma", "llama"])
def models(request):
    hf = tiny_hf_model(request.param, num_image_codes=IMAGE_CODES, max_positions=2048, seed=1)
    return hf, convert_multimodal(hf)


def test_prompts_are_upstreams(vocab):
    sp = vocab.text
    rows = guided_batch(vocab, ["a red cat", "blue water"], num_images=2, grid=(32, 32))
    cond = lambda p: [2] + sp.encode(p + " Generate an image based on this description.") + [SPECIAL["boi"]]
    uncond = [SPECIAL["bos"], SPECIAL["unconditional"], SPECIAL["boi"]]
    assert rows == [cond("a red cat")] * 2 + [cond("blue water")] * 2 + [uncond] * 4


def test_size_prefix_follows_the_model_not_the_grid(vocab):
    # A model trained without the prefix (upstream's) is prompted without it at any grid.
    assert guided_batch(vocab, ["a red cat"], num_images=1, grid=(4, 6)) == guided_batch(
        vocab, ["a red cat"], num_images=1, grid=(32, 32))
    # One trained with it states the grid in both halves.
    rows = guided_batch(vocab, ["a red cat"], num_images=1, grid=(4, 6), pixels_per_code=16, size_prefix=True)
    size = vocab.text.encode("Image Size: Width is 96 Height is 64.")
    assert rows[0] == [2] + vocab.text.encode(
        "Image Size: Width is 96 Height is 64. a red cat Generate an image based on this description."
    ) + [SPECIAL["boi"]]
    assert rows[1] == [2] + size + [SPECIAL["unconditional"], SPECIAL["boi"]]


# The reference loop is slow (transformers' per-step overhead); the full 32x32 grid runs
# in the slow suite, the default suite checks the same loop on an 8x8 grid.
@pytest.mark.parametrize("grid", [(8, 8), pytest.param((32, 32), marks=pytest.mark.slow)])
def test_guided_top1_matches_upstream_loop(vocab, models, grid):
    hf, model = models
    prompts = ["a red cat sits on the mat", "birds"]
    ours = generate_image_codes(
        model, vocab, prompts, guidance_scale=3.0, sampling=SamplingParams(temperature=0.99, top_k=1, top_p=0.96),
        num_images=2, seed=0, grid=grid,
    )
    rows = guided_batch(vocab, prompts, 2, grid)
    steps = grid[0] * grid[1]
    reference = upstream_t2i(hf, rows, steps, TEXT_VOCAB, guidance_scale=3.0, temperature=0.99, top_k=1, top_p=0.96)
    assert ours.codes.shape == (4, steps) and ours.grid == grid
    assert len(np.unique(reference)) > 5  # the test model draws varied codes
    np.testing.assert_array_equal(ours.codes, reference)


def test_sampling_is_seeded(vocab, models):
    _, model = models
    kwargs = dict(guidance_scale=7.0, sampling=SamplingParams(temperature=0.99, top_k=40, top_p=0.96),
                  num_images=2, grid=(4, 6))
    a = generate_image_codes(model, vocab, ["a red cat"], seed=3, **kwargs)
    b = generate_image_codes(model, vocab, ["a red cat"], seed=3, **kwargs)
    c = generate_image_codes(model, vocab, ["a red cat"], seed=4, **kwargs)
    assert a.codes.shape == (2, 24) and a.grid == (4, 6)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, c.codes)
    assert a.codes.min() >= 0 and a.codes.max() < IMAGE_CODES


def test_grid_beyond_context_fails_before_compute(vocab, models, monkeypatch):
    _, model = models

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(decode_loop, "_prefill", forbidden)
    with pytest.raises(ValueError, match="context of 2048"):
        generate_image_codes(model, vocab, ["a red cat"], grid=(64, 64))
