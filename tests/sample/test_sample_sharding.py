"""Sampling on a (data, fsdp, tensor) mesh of 8 fake CPU devices, and compiled for a TPU slice."""

import os

import numpy as np
import pytest
import torch

from helpers import REPO
from helpers.sample_models import convert, random_prompts, tiny_hf_model
from liquid_jax.convert.hf_mapping import config_from_hf, params_from_hf
from liquid_jax.model.transformer import from_params
from liquid_jax.sample.decode_loop import generate_tokens, left_pad
from liquid_jax.sample.filters import GREEDY, SamplingParams
from liquid_jax.sample.placement import BatchPlacement
from liquid_jax.sharding import batch_shard_count, make_mesh, pad_to_batch_shards


def test_batch_shards_are_counted_and_padded_to_in_one_place():
    mesh = make_mesh((2, 2, 2))  # data and fsdp carry the batch; tensor does not
    assert batch_shard_count(mesh) == 4 and batch_shard_count(None) == 1
    assert [pad_to_batch_shards(rows, mesh) for rows in (1, 4, 5)] == [4, 4, 8]
    assert pad_to_batch_shards(5, None) == 5


def test_placement_pads_each_half_to_the_batch_shards():
    mesh = make_mesh((2, 2, 2))  # batch split 4 ways
    placement = BatchPlacement(mesh, rows=6, guided=True)  # 3 conditional + 3 unconditional
    np.testing.assert_array_equal(placement.index, [0, 1, 2, 2, 3, 4, 5, 5])
    rows = placement.rows(np.arange(6)[:, None] * np.ones((1, 5), np.int32))
    assert rows.shape == (8, 5) and len(rows.sharding.device_set) == 8
    np.testing.assert_array_equal(placement.take(np.asarray(rows))[:, 0], np.arange(6))


def test_sharded_generation_matches_single_device_and_transformers():
    hf = tiny_hf_model("llama")
    prompts = random_prompts([5, 11, 3], seed=4)
    mesh = make_mesh((2, 2, 2))
    config = config_from_hf(hf.config.to_dict())
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    sharded_model = from_params(config, params_from_hf(config, state.__getitem__), mesh=mesh)
    assert len(sharded_model.embed.embedding[...].sharding.device_set) == 8

    params = SamplingParams(temperature=1.0, top_k=30)
    single = generate_tokens(convert(hf), prompts, 12, sampling=params, seed=5)
    sharded = generate_tokens(sharded_model, prompts, 12, sampling=params, seed=5, mesh=mesh)
    np.testing.assert_array_equal(sharded.tokens, single.tokens)

    greedy = generate_tokens(sharded_model, prompts, 12, sampling=GREEDY, mesh=mesh)
    batch = left_pad(prompts, pad_id=0)
    expected = hf.generate(
        torch.tensor(batch.tokens, dtype=torch.long), attention_mask=torch.tensor(batch.segment_ids),
        max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None,
    )[:, batch.tokens.shape[1]:].numpy()
    np.testing.assert_array_equal(greedy.tokens, expected)


@pytest.mark.slow
def test_liquid_7b_guided_sampler_compiles_for_a_tpu_slice(monkeypatch):
    """Ahead-of-time: Liquid-7B (bf16), 4 images with guidance (8 rows), 32x32 grid, on a
    v5e-4 slice with the weights and rows split 4 ways; must fit 16 GiB per chip."""
    # Only compiling: other processes on this machine may hold libtpu too.
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    import jax
    from flax import nnx
    from jax.experimental import topologies
    from jax.sharding import NamedSharding, PartitionSpec

    from liquid_jax.model.config import load_model_config
    from liquid_jax.model.transformer import abstract_model
    from liquid_jax.sample.decode_loop import DecodePlan, _decode, _loop_weights, _prefill, plan_lengths
    from liquid_jax.sharding import logical_to_spec, state_shardings

    config = load_model_config(os.path.join(REPO, "configs", "gemma_7b.py"), dtype="bfloat16",
                               param_dtype="bfloat16", scan_layers=True)
    devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
    mesh = make_mesh((1, 4, 1), devices=devices)

    graphdef, state = nnx.split(abstract_model(config))
    shardings = state_shardings(state, mesh)
    params = jax.tree.map(
        lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)), state, shardings,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    rows, prompt = 8, 40
    width, cache_len = plan_lengths(config.max_position_embeddings, prompt, 1024, None)
    plan = DecodePlan(num_steps=1024, cache_len=cache_len, vocab_start=config.text_vocab_size,
                      vocab_end=config.vocab_size, sampling=SamplingParams(temperature=0.99, top_k=4096, top_p=0.96),
                      guided=True, stop_tokens=(), pad_id=0)
    batch = NamedSharding(mesh, logical_to_spec(("batch",), mesh=mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    ints = jax.ShapeDtypeStruct((rows, width), np.int32, sharding=batch)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    scale = jax.ShapeDtypeStruct((), np.float32, sharding=replicated)
    with jax.set_mesh(mesh):
        prefill = _prefill.lower(graphdef, params, ints, ints, ints, key, scale, plan=plan).compile()
        carry = jax.eval_shape(lambda *a: _prefill(graphdef, *a, plan=plan), params, ints, ints, ints, key, scale)
        carry = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                             carry, prefill.output_shardings)
        until = jax.ShapeDtypeStruct((), np.int32, sharding=replicated)
        loop_weights = _loop_weights.lower(graphdef, params, plan=plan).compile()
        weights = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                               jax.eval_shape(lambda p: _loop_weights(graphdef, p, plan=plan), params),
                               loop_weights.output_shardings)
        decode = _decode.lower(graphdef, params, weights, carry, until, plan=plan).compile()
    for compiled in (prefill, decode):
        memory = compiled.memory_analysis()
        total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
                 + memory.temp_size_in_bytes)
        assert total < 16 * 2**30, f"{total / 2**30:.1f} GiB per chip"
    cache_k = carry.cache.k
    assert len(cache_k) == 28 and cache_k[0].shape == (rows, 16, cache_len, 256)
    assert cache_k[0].sharding.spec[0] is not None  # rows split over the slice
