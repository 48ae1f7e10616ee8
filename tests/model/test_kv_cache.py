"""Incremental decoding with KVCache reproduces full recomputation at every step."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from helpers import REPO
from liquid_jax.convert.hf_mapping import config_to_hf, params_to_hf
from liquid_jax.model.config import load_model_config
from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import Transformer

CONFIGS = pathlib.Path(REPO) / "configs"
BATCH, PROMPT, STEPS, PADS = 2, 12, 22, (5, 0)


def random_model(config) -> Transformer:
    """A model whose weights are large enough that every part of the layer matters."""
    model = Transformer(config, rngs=nnx.Rngs(0))
    state = nnx.state(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(model, jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) * 0.1 for k, x in zip(keys, leaves)]))
    return model


def left_padded_batch(vocab: int):
    """Tokens, positions and segment ids [B, PROMPT + STEPS]; row 0 starts with PADS[0] pads."""
    total = PROMPT + STEPS
    tokens = np.random.default_rng(0).integers(0, vocab, (BATCH, total)).astype(np.int32)
    segments = np.ones((BATCH, total), np.int32)
    for row, n in enumerate(PADS):
        segments[row, :n] = 0
        tokens[row, :n] = 0
    positions = np.clip(np.cumsum(segments, axis=1) - 1, 0, None).astype(np.int32)
    return tokens, positions, segments


@pytest.mark.parametrize(
    "name, changes",
    [
        ("tiny_gemma", {}),
        ("tiny_gemma2", {"sliding_window": 8, "scan_layers": True}),
        ("tiny_llama", {}),
    ],
)
def test_decode_matches_full_recomputation(name, changes):
    config = load_model_config(str(CONFIGS / f"{name}.py")).replace(**changes)
    graphdef, state = nnx.split(random_model(config))

    @jax.jit
    def step(state, tokens, positions, segments, cache):
        return nnx.merge(graphdef, state)(tokens, positions, segments, cache)

    tokens, positions, segments = map(jnp.asarray, left_padded_batch(config.vocab_size))
    full, _ = step(state, tokens, positions, segments, None)
    full = np.asarray(full[..., : config.vocab_size])
    real = np.asarray(segments) != 0
    tolerance = 1e-4 * max(1.0, np.abs(full).max())

    def check(logits, start, stop):
        logits = np.asarray(logits[..., : config.vocab_size])
        diff = np.abs(logits - full[:, start:stop]).max(axis=-1)
        worst = diff[real[:, start:stop]].max()
        assert worst <= tolerance, f"{name} {changes}: slots [{start}, {stop}) differ by {worst:.3g}"

    cache = KVCache.init(config, BATCH, PROMPT + STEPS + 3, config.dtype)  # 3 slots stay empty
    # Prefill in two chunks, then decode one token at a time.
    chunks = [(0, PROMPT // 2), (PROMPT // 2, PROMPT)] + [(t, t + 1) for t in range(PROMPT, PROMPT + STEPS)]
    for start, stop in chunks:
        logits, cache = step(state, tokens[:, start:stop], positions[:, start:stop],
                             segments[:, start:stop], cache)
        check(logits, start, stop)

    assert int(cache.index) == PROMPT + STEPS
    np.testing.assert_array_equal(cache.segment_ids[:, : PROMPT + STEPS], segments)
    np.testing.assert_array_equal(cache.segment_ids[:, PROMPT + STEPS:], 0)
    np.testing.assert_array_equal(cache.positions[:, : PROMPT + STEPS], positions)
    slots = PROMPT + STEPS + 3
    assert len(cache.k) == config.num_layers
    assert cache.k[0].shape == (BATCH, config.num_kv_heads, slots, config.head_dim)


def test_default_positions_continue_from_the_cache_index():
    config = load_model_config(str(CONFIGS / "tiny_qwen2.py"))
    model = random_model(config)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, config.vocab_size, (1, 10)), jnp.int32)
    run = nnx.jit(lambda m, t, c: m(t, cache=c))
    full, _ = run(model, tokens, None)
    cache = KVCache.init(config, 1, 16)
    _, cache = run(model, tokens[:, :5], cache)
    logits, cache = run(model, tokens[:, 5:], cache)
    np.testing.assert_allclose(logits, full[:, 5:], atol=1e-4 * max(1.0, float(jnp.abs(full).max())))
    np.testing.assert_array_equal(cache.positions[0, :10], np.arange(10))
    assert cache.k[0].dtype == jnp.float32
    assert len(jax.tree.leaves(cache)) == 2 * config.num_layers + 3


def test_greedy_decoding_matches_transformers_generate():
    """Left-padded greedy generation against transformers' own cache (Gemma 2, window 8)."""
    config = load_model_config(str(CONFIGS / "tiny_gemma2.py"), sliding_window=8, scan_layers=True)
    model = random_model(config)
    hf_config = transformers.AutoConfig.for_model(**config_to_hf(config))
    hf_config._attn_implementation = "eager"
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
    weights = {name: torch.tensor(t) for name, t in params_to_hf(config, nnx.to_pure_dict(nnx.state(model)))}
    hf_model.load_state_dict(weights, strict=False)  # the tied lm_head is the embedding

    tokens, positions, segments = (a[:, :PROMPT] for a in left_padded_batch(config.text_vocab_size))
    new_tokens = 16
    with torch.no_grad():
        expected = hf_model.generate(
            input_ids=torch.as_tensor(tokens, dtype=torch.long), attention_mask=torch.as_tensor(segments),
            max_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
        )[:, PROMPT:].numpy()

    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, t, p, seg, c: nnx.merge(graphdef, s)(t, p, seg, c))
    cache = KVCache.init(config, BATCH, PROMPT + new_tokens)
    logits, cache = step(state, *map(jnp.asarray, (tokens, positions, segments)), cache)
    position = jnp.asarray(positions[:, -1:])
    generated = []
    for _ in range(new_tokens):
        token = jnp.argmax(logits[:, -1:, : config.vocab_size], axis=-1).astype(jnp.int32)
        generated.append(np.asarray(token))
        position = position + 1
        logits, cache = step(state, token, position, jnp.ones_like(token), cache)
    np.testing.assert_array_equal(np.concatenate(generated, axis=1), expected)
