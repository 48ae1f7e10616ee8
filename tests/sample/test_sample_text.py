"""Text generation: greedy parity with transformers, cache vs recomputation, sizing errors."""

import numpy as np
import pytest
import torch

from helpers.sample_models import convert, random_prompts, tiny_hf_model
from liquid_jax.sample import decode_loop
from liquid_jax.sample.decode_loop import generate_tokens, left_pad
from liquid_jax.sample.filters import GREEDY, SamplingParams

STEPS = 16
PROMPT_LENGTHS = [5, 11, 3]  # left padding of 6, 0 and 8 tokens; longer than Gemma 2's window


@pytest.fixture(
    scope="module", params=["gemma", "gemma2", "llama", pytest.param("qwen2", marks=pytest.mark.slow)]
)
def models(request):
    embed_std = 0.02 if request.param.startswith("gemma") else None  # tied tables: keep them small
    hf = tiny_hf_model(request.param, embed_std=embed_std)
    return hf, convert(hf)


def _hf_greedy(hf, prompts, steps, eos):
    batch = left_pad(prompts, pad_id=0)
    out = hf.generate(
        torch.tensor(batch.tokens, dtype=torch.long), attention_mask=torch.tensor(batch.segment_ids),
        max_new_tokens=steps, do_sample=False, pad_token_id=0, eos_token_id=eos,
        output_logits=True, return_dict_in_generate=True,
    )
    tokens = out.sequences[:, batch.tokens.shape[1]:].numpy()
    tokens = np.pad(tokens, ((0, 0), (0, steps - tokens.shape[1])))  # generate stops early when all rows end
    return tokens, torch.stack(out.logits, 1).numpy()


def _recomputed_logits(model, prompts, generated):
    """Logits for every generated step from one cache-free pass over prompt + output."""
    batch = left_pad(prompts, pad_id=0)
    width = batch.tokens.shape[1]
    tokens = np.concatenate([batch.tokens, generated], axis=1)
    segments = np.concatenate([batch.segment_ids, np.ones_like(generated)], axis=1)
    positions = np.maximum(np.cumsum(segments, axis=1) - 1, 0)
    full, _ = model(tokens, positions, segments)
    return np.asarray(full)[:, width - 1:-1, : model.config.vocab_size]


def test_greedy_matches_transformers_and_cache_matches_recomputation(models):
    hf, model = models
    prompts = random_prompts(PROMPT_LENGTHS, seed=1)
    free_run, _ = _hf_greedy(hf, prompts, STEPS, eos=None)
    assert all(len(set(row)) > 3 for row in free_run)  # the test model does not just repeat itself
    eos = int(free_run[2, 6])  # a stop token that ends row 2 (at least) mid-way
    expected, hf_logits = _hf_greedy(hf, prompts, STEPS, eos=eos)
    ours = generate_tokens(model, prompts, STEPS, sampling=GREEDY, stop_tokens=(eos,), keep_logits=True)

    np.testing.assert_array_equal(ours.tokens, expected)
    first_stop = [list(r).index(eos) + 1 if eos in r else STEPS for r in expected]
    np.testing.assert_array_equal(ours.lengths, first_stop)
    assert ours.lengths[2] <= 7

    # Finished rows keep being fed padding, exactly as transformers does.
    recomputed = _recomputed_logits(model, prompts, ours.tokens)
    np.testing.assert_allclose(ours.logits, recomputed, atol=1e-4, rtol=0)
    steps_run = hf_logits.shape[1]
    np.testing.assert_allclose(ours.logits[:, :steps_run], hf_logits, atol=1e-4, rtol=0)


def test_sampling_is_seeded_and_stays_in_range():
    model = convert(tiny_hf_model("llama"))
    prompts = random_prompts(PROMPT_LENGTHS, seed=3)
    params = SamplingParams(temperature=1.3, top_k=20, top_p=0.9)
    a = generate_tokens(model, prompts, STEPS, sampling=params, seed=11)
    b = generate_tokens(model, prompts, STEPS, sampling=params, seed=11)
    c = generate_tokens(model, prompts, STEPS, sampling=params, seed=12)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    assert a.tokens.min() >= 0 and a.tokens.max() < model.config.vocab_size


def _forbid_compute(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(decode_loop, "_prefill", forbidden)


def test_prompt_longer_than_cache_is_an_error(models, monkeypatch):
    _, model = models
    _forbid_compute(monkeypatch)
    prompts = random_prompts([40, 3])
    with pytest.raises(ValueError, match="needs 49 cache slots, more than the requested cache_len 32"):
        generate_tokens(model, prompts, 10, sampling=GREEDY, cache_len=32)


def test_request_beyond_context_is_an_error(models, monkeypatch):
    _, model = models
    _forbid_compute(monkeypatch)
    prompts = random_prompts([250, 3])
    with pytest.raises(ValueError, match="more than the model's context of 256"):
        generate_tokens(model, prompts, 7, sampling=GREEDY)


def test_bad_requests_are_errors(models):
    _, model = models
    with pytest.raises(ValueError, match="empty"):
        generate_tokens(model, [[2, 5], []], 4, sampling=GREEDY)
    with pytest.raises(ValueError, match=">= 1"):
        generate_tokens(model, [[2, 5]], 0, sampling=GREEDY)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate_tokens(model, [[2, 5]], 3, sampling=GREEDY, vocab_range=(0, 10**6))
    with pytest.raises(ValueError, match="in pairs"):
        generate_tokens(model, [[2, 5]] * 3, 3, sampling=GREEDY, guidance_scale=2.0)
