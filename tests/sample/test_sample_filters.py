"""Temperature / top-k / top-p filters against transformers' logits warpers."""

import jax
import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from liquid_jax.sample.filters import (
    GREEDY, SamplingParams, choose_tokens, filter_logits, top_k_filter, top_p_filter,
)
from liquid_jax.sample.lm_sampling import sampling_params


def _logits(seed: int, rows: int = 6, vocab: int = 300, ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, (rows, vocab)).astype(np.float32)
    if ties:  # coarse values: many exact ties, including at the top-k boundary
        x = np.round(x)
    return x


def _hf(warpers, logits: np.ndarray) -> np.ndarray:
    scores = torch.from_numpy(logits.copy())
    for w in warpers:
        scores = w(None, scores)
    return scores.numpy()


@pytest.mark.parametrize("k", [1, 5, 50, 299, 300, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_top_k_matches_transformers(k, ties):
    logits = _logits(k, ties=ties)
    ours = np.asarray(top_k_filter(logits, k))
    np.testing.assert_array_equal(ours, _hf([TopKLogitsWarper(k)], logits))


@pytest.mark.parametrize("p", [0.01, 0.3, 0.9, 0.96, 0.999])
def test_top_p_matches_transformers(p):
    logits = _logits(int(p * 1000))
    ours = np.asarray(top_p_filter(logits, p))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(_hf([TopPLogitsWarper(p)], logits)))
    kept = ~np.isinf(ours)
    np.testing.assert_array_equal(ours[kept], logits[kept])


@pytest.mark.parametrize(
    "temperature,k,p", [(0.99, 40, 0.96), (1.7, 0, 0.5), (0.5, 7, 1.0), (1.0, 300, 0.9)]
)
def test_chain_matches_transformers(temperature, k, p):
    logits = _logits(3)
    warpers = [TemperatureLogitsWarper(temperature)]
    if k:
        warpers.append(TopKLogitsWarper(k))
    if p < 1:
        warpers.append(TopPLogitsWarper(p))
    expected = _hf(warpers, logits)
    ours = np.asarray(filter_logits(logits, SamplingParams(temperature=temperature, top_k=k, top_p=p)))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
    kept = ~np.isinf(expected)
    np.testing.assert_allclose(ours[kept], expected[kept], rtol=1e-6)


def test_sampling_follows_the_filtered_distribution():
    logits = np.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], np.float32)
    params = SamplingParams(temperature=0.8, top_k=4, top_p=0.9)
    filtered = _hf([TemperatureLogitsWarper(0.8), TopKLogitsWarper(4), TopPLogitsWarper(0.9)], logits)[0]
    expected = np.exp(filtered - filtered.max())
    expected /= expected.sum()
    draws = 20000
    keys = jax.random.split(jax.random.key(0), draws)
    tokens = np.asarray(jax.vmap(lambda key: choose_tokens(logits, key, params))(keys))[:, 0]
    freq = np.bincount(tokens, minlength=6) / draws
    assert set(np.flatnonzero(freq)) <= set(np.flatnonzero(expected))
    # 4-sigma binomial bound per token
    np.testing.assert_allclose(freq, expected, atol=4 * np.sqrt(0.25 / draws))


def test_greedy_is_argmax_and_seeded_sampling_repeats():
    logits = _logits(9, rows=4, vocab=50)
    np.testing.assert_array_equal(
        choose_tokens(logits, jax.random.key(0), SamplingParams(greedy=True)), logits.argmax(-1)
    )
    params = SamplingParams(temperature=1.0, top_k=20, top_p=0.95)
    a = choose_tokens(logits, jax.random.key(5), params)
    b = choose_tokens(logits, jax.random.key(5), params)
    np.testing.assert_array_equal(a, b)


def test_top_k_one_is_greedy_and_still_validated():
    """Top-k 1 keeps only the arg-max (distinct logits), so the user-facing settings take the greedy path."""
    logits = _logits(3, rows=6, vocab=40)
    top1 = SamplingParams(temperature=0.7, top_k=1, top_p=0.9)
    np.testing.assert_array_equal(choose_tokens(logits, jax.random.key(1), top1), logits.argmax(-1))
    assert sampling_params(0.7, 1, 0.9) is GREEDY and sampling_params(0.0, 64, 1.0) is GREEDY
    assert not sampling_params(0.7, 2, 0.9).greedy
    with pytest.raises(ValueError, match="temperature"):
        sampling_params(-1.0, 1, 1.0)


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)])
def test_invalid_sampling_params_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
