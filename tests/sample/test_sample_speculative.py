"""Speculative Jacobi decoding keeps the plain sampler's distribution exactly: a chi-square
test against the exact joint distribution, greedy codes equal to token-by-token decoding
(every family, a full 32x32 grid, a mesh), and acceptance logits equal to a
teacher-forced forward."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from helpers.sample_models import TEXT_VOCAB, convert_multimodal, random_prompts, tiny_hf_model
from liquid_jax.sample import speculative
from liquid_jax.sample.decode_loop import generate_tokens, left_pad
from liquid_jax.sample.filters import GREEDY, SamplingParams, filter_logits, top_p_filter
from liquid_jax.sample.speculative import COUPLINGS, generate_speculative
from liquid_jax.sharding import make_mesh

CODES, STEPS, CFG = 8, 3, 2.0
SAMPLING = SamplingParams(temperature=1.5, top_k=6, top_p=0.8)
COND, UNCOND = [2, 11, 12, 13, 4], [2, 6, 4]  # left padded against each other
SAMPLES, BATCH = 100_000, 25_000


@pytest.fixture(scope="module")
def tiny():
    hf = tiny_hf_model("gemma", num_image_codes=CODES, d_model=16, max_positions=64, seed=3)
    return convert_multimodal(hf, num_image_codes=CODES)


@pytest.fixture(scope="module")
def exact(tiny):
    """The plain sampler's joint distribution of the STEPS codes, enumerated: teacher-forced
    logits of every prefix (no cache), guidance, filters, product of the conditionals."""
    forward = jax.jit(tiny.hidden_states)
    conditionals = {}
    for t in range(STEPS):
        prefixes = list(itertools.product(range(CODES), repeat=t))
        rows = [p + [TEXT_VOCAB + c for c in pre] for p in (COND, UNCOND) for pre in prefixes]
        batch = left_pad(rows, 0)
        hidden, _ = forward(jnp.asarray(batch.tokens), jnp.asarray(batch.positions), jnp.asarray(batch.segment_ids))
        logits = tiny.project(hidden[:, -1], TEXT_VOCAB, TEXT_VOCAB + CODES)
        cond, uncond = logits[: len(prefixes)], logits[len(prefixes):]
        probs = jax.nn.softmax(filter_logits(uncond + CFG * (cond - uncond), SAMPLING), axis=-1)
        conditionals.update(zip(prefixes, np.asarray(probs, np.float64)))
    return {seq: float(np.prod([conditionals[seq[:t]][seq[t]] for t in range(STEPS)]))
            for seq in itertools.product(range(CODES), repeat=STEPS)}


def speculative_counts(model, samples, coupling="gumbel", batch=BATCH, library=None):
    """Counts of each code sequence over ``samples`` images, and the first batch's codes."""
    counts, first = {}, None
    for start in range(0, samples, batch):
        result = generate_speculative(
            model, [COND] * batch + [UNCOND] * batch, STEPS, window=3, sampling=SAMPLING, seed=7,
            vocab_range=(TEXT_VOCAB, TEXT_VOCAB + CODES), guidance_scale=CFG, coupling=coupling,
            image_ids=np.arange(start, start + batch), library=library)
        first = result.tokens if first is None else first
        for row in result.tokens - TEXT_VOCAB:
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    return counts, first


def chi_square_p(exact, counts) -> float:
    """p-value of the counts under the exact distribution (cells expecting < 5 pooled)."""
    cells = sorted(exact)
    observed = np.array([counts.get(c, 0) for c in cells], np.float64)
    probs = np.array([exact[c] for c in cells])
    expected = probs / probs.sum() * observed.sum()  # the enumeration sums to 1 within float32
    assert observed[expected == 0].sum() == 0, "a sample the plain sampler can never draw"
    big = expected >= 5
    observed = np.append(observed[big], observed[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    keep = expected > 0
    return stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_samples_have_exactly_the_plain_samplers_distribution(tiny, exact, coupling):
    counts, together = speculative_counts(tiny, SAMPLES, coupling=coupling)
    assert sum(counts.values()) == SAMPLES
    assert chi_square_p(exact, counts) > 1e-3
    # Batch size 1: every image is the same sample alone as in a batch of 25,000 (its
    # randomness is keyed by seed and image index only), so those 100,000 are also
    # samples of batch-1 decoding.
    for image in range(0, BATCH, 3001):
        alone = generate_speculative(
            tiny, [COND, UNCOND], STEPS, window=3, sampling=SAMPLING, seed=7, image_ids=[image],
            vocab_range=(TEXT_VOCAB, TEXT_VOCAB + CODES), guidance_scale=CFG, coupling=coupling).tokens
        np.testing.assert_array_equal(alone[0], together[image])


def test_drafts_from_a_library_keep_the_distribution(tiny, exact):
    """Library rows: the likeliest sequences (drafts often accepted) and some the plain
    sampler never draws (drafts always rejected), with maximal coupling's redrafts."""
    likely = sorted(exact, key=exact.get, reverse=True)[:12]
    never = [seq for seq in exact if exact[seq] == 0][:4]
    assert never, "the filters leave every sequence possible: pick other settings"
    # Half the samples of the test above: the test below catches biased variants with a quarter.
    counts, _ = speculative_counts(tiny, SAMPLES // 2, coupling="maximal", library=np.array(likely + never))
    assert chi_square_p(exact, counts) > 1e-3


@pytest.mark.slow  # two more compilations and 50,000 samples
def test_the_chi_square_test_catches_wrong_variants(tiny, exact, monkeypatch):
    """Re-filtering the residual with top-p, or keeping a redraft's stale proposal, is biased."""
    residual = speculative._residual

    def refiltered(target, proposal):
        rest = residual(target, proposal)
        logits = jnp.where(rest > 0, jnp.log(jnp.where(rest > 0, rest, 1.0)), -jnp.inf)
        return jax.nn.softmax(top_p_filter(logits.reshape(-1, CODES), SAMPLING.top_p)).reshape(rest.shape)

    redraft = speculative._redraft

    def stale(state, old_count, new_count, old_drafts, old_proposals, target, plan):
        drafts, proposals = redraft(state, old_count, new_count, old_drafts, old_proposals, target, plan)
        had = old_proposals.sum(-1, keepdims=True) > 0
        return drafts, jnp.where(had, old_proposals, proposals)

    for name, wrong in (("_residual", refiltered), ("_redraft", stale)):
        with monkeypatch.context() as patch:
            patch.setattr(speculative, name, wrong)
            jax.clear_caches()
            assert chi_square_p(exact, speculative_counts(tiny, BATCH)[0]) < 1e-6, name
    jax.clear_caches()


@functools.cache
def family_model(family):
    return convert_multimodal(tiny_hf_model(family, num_image_codes=64, max_positions=2048, seed=1))


def _guided_rows():
    prompts = random_prompts([5, 9, 7], seed=2)
    return prompts + [[2, 6, 4]] * len(prompts)  # conditional rows of other lengths: left padding


def test_greedy_codes_equal_token_by_token_decoding_on_a_full_grid():
    """A full 32x32 grid with guidance on a left-padded batch, both couplings."""
    model = family_model("gemma")
    rows, vocab = _guided_rows(), (TEXT_VOCAB, TEXT_VOCAB + 64)
    top1 = SamplingParams(temperature=0.99, top_k=1, top_p=0.96)  # upstream's filters with top-k 1
    plain = generate_tokens(model, rows, 1024, sampling=top1, vocab_range=vocab, guidance_scale=3.0).tokens
    # GREEDY: the path without random numbers that sampling_params takes for top-k 1.
    for window, coupling, sampling in ((8, "gumbel", top1), (3, "maximal", top1), (8, "gumbel", GREEDY)):
        fast = generate_speculative(model, rows, 1024, window=window, sampling=sampling, vocab_range=vocab,
                                    guidance_scale=3.0, coupling=coupling)
        np.testing.assert_array_equal(fast.tokens, plain[:3], err_msg=f"L={window} {coupling} {sampling}")
        assert (fast.forwards < 1024).all()


def test_greedy_drafts_from_a_library_keep_the_codes_and_save_passes():
    """A library holding the images being drawn (behind rows that share only their first
    codes) drafts whole runs of them: identical codes, fewer forward passes."""
    model, rows, vocab = family_model("gemma"), _guided_rows(), (TEXT_VOCAB, TEXT_VOCAB + 64)
    plain = generate_tokens(model, rows, 64, sampling=GREEDY, vocab_range=vocab, guidance_scale=3.0).tokens[:3]
    shared = np.repeat(plain[:, :8] - TEXT_VOCAB, 4, axis=0)
    decoys = np.concatenate([shared, np.random.default_rng(0).integers(0, 64, (12, 56))], axis=1)
    library = np.concatenate([decoys, plain - TEXT_VOCAB])  # ties go to the first row: a decoy
    kwargs = dict(window=8, sampling=GREEDY, vocab_range=vocab, guidance_scale=3.0)
    jacobi = generate_speculative(model, rows, 64, **kwargs)
    drafted = generate_speculative(model, rows, 64, library=library, **kwargs)
    np.testing.assert_array_equal(drafted.tokens, plain)
    assert drafted.forwards.max() <= 64 / 8 + 4 < jacobi.forwards.min(), (drafted.forwards, jacobi.forwards)


@pytest.mark.parametrize("family", ["gemma2", "llama", "qwen2"])
def test_greedy_codes_equal_token_by_token_decoding_in_every_family(family):
    model, rows, vocab = family_model(family), _guided_rows(), (TEXT_VOCAB, TEXT_VOCAB + 64)
    plain = generate_tokens(model, rows, 48, sampling=GREEDY, vocab_range=vocab, guidance_scale=3.0).tokens
    fast = generate_speculative(model, rows, 48, window=5, sampling=GREEDY, vocab_range=vocab, guidance_scale=3.0)
    np.testing.assert_array_equal(fast.tokens, plain[:3])


@pytest.mark.parametrize("family", ["gemma2", "qwen2"])  # soft-caps and sliding windows; biases
def test_acceptance_logits_equal_a_teacher_forced_forward(family):
    model = family_model(family)
    rows, vocab, steps = _guided_rows(), (TEXT_VOCAB, TEXT_VOCAB + 64), 24
    result = generate_speculative(model, rows, steps, window=5, vocab_range=vocab, guidance_scale=3.0, seed=1,
                                  sampling=SamplingParams(temperature=1.0, top_k=16), keep_logits=True)
    codes = np.concatenate([result.tokens, result.tokens])  # both guidance rows carry the codes
    batch = left_pad([list(r) + list(c) for r, c in zip(rows, codes)], 0)
    hidden, _ = model.hidden_states(jnp.asarray(batch.tokens), jnp.asarray(batch.positions),
                                    jnp.asarray(batch.segment_ids))
    forced = np.asarray(model.project(hidden[:, -steps - 1:-1], *vocab))
    np.testing.assert_allclose(result.logits, forced, atol=1e-4, rtol=1e-4, err_msg=family)


def test_sharded_speculative_decoding_matches_one_device():
    hf = tiny_hf_model("llama", num_image_codes=64, max_positions=512, seed=4)
    mesh = make_mesh((2, 2, 2))
    rows, vocab = _guided_rows(), (TEXT_VOCAB, TEXT_VOCAB + 64)
    sampling = SamplingParams(temperature=1.0, top_k=20)
    for library in (None, np.random.default_rng(5).integers(0, 64, (40, 32))):
        kwargs = dict(window=6, sampling=sampling, seed=3, vocab_range=vocab, guidance_scale=2.0, library=library)
        single = generate_speculative(convert_multimodal(hf), rows, 32, **kwargs)
        sharded = generate_speculative(convert_multimodal(hf), rows, 32, mesh=mesh, **kwargs)
        np.testing.assert_array_equal(sharded.tokens, single.tokens)
        np.testing.assert_array_equal(sharded.forwards, single.forwards)


def test_a_window_below_two_is_refused():
    model = family_model("gemma")
    with pytest.raises(ValueError, match="window must be >= 2"):
        generate_speculative(model, [[2, 5]], 4, window=1, sampling=GREEDY, vocab_range=(TEXT_VOCAB, TEXT_VOCAB + 64))
