"""Attention kernels (splash, flash_gpu) in Pallas interpret mode against the einsum
reference: forward and gradients per feature, each feature shown to matter, the choice
of implementation, and a whole model on a (data 2, fsdp 2, tensor 2) mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from liquid_jax.model.attention import (
    KERNEL_FUNCTIONS, attention, attention_mask, dot_product_attention, resolve_implementation,
)
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import from_params
from liquid_jax.sharding import make_mesh
from liquid_jax.train import state as state_lib
from liquid_jax.train import train_step as ts

LENGTH, HEAD_DIM = 256, 32
KERNELS = ("splash", "flash_gpu")
BLOCK = {"splash": 128, "flash_gpu": 64}  # two or more blocks per row: block skipping runs


def _positions(segment_ids: np.ndarray) -> np.ndarray:
    """Positions counting from 0 in each segment (padding too), as the data pipeline does."""
    positions = np.zeros_like(segment_ids)
    for row, ids in enumerate(segment_ids):
        for start in np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]):
            run = np.flatnonzero(ids[start:] != ids[start])
            end = start + (run[0] if len(run) else len(ids) - start)
            positions[row, start:end] = np.arange(end - start)
    return positions


def _segments(*rows: list[tuple[int, int]]) -> np.ndarray:
    """Rows of (segment id, length) runs."""
    return np.stack([np.concatenate([np.full(n, s) for s, n in row]) for row in rows]).astype(np.int32)


PACKED = _segments([(1, 70), (2, 80), (3, 90), (0, 16)], [(1, 30), (2, 50), (3, 100), (4, 76)])
LEFT_PADDED = _segments([(0, 40), (1, 216)], [(0, 3), (1, 253)])
CASES = {
    # name: (segment ids, heads, kv heads, query_pre_attn_scalar, window, softcap)
    "packed_llama_gqa": (PACKED, 4, 2, None, None, None),
    "gemma2_local": (PACKED, 4, 2, 8.0, 48, 5.0),
    "gemma2_global_left_padded": (LEFT_PADDED, 4, 2, 8.0, None, 5.0),
    "gemma_mqa": (PACKED, 4, 1, None, None, None),
}


def _inputs(heads, kv_heads, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(2, LENGTH, h, HEAD_DIM)), jnp.float32)
               for h in (heads, kv_heads, kv_heads))
    return q, k, v


def _reference(q, k, v, segment_ids, scale, window=None, softcap=None):
    """The einsum attention with the model's dense mask (by positions)."""
    positions = _positions(segment_ids)
    mask = attention_mask(segment_ids, positions, segment_ids, positions, window)
    return dot_product_attention(q, k, v, mask, scale, softcap)


def _relative(a, b, real):
    """max |a - b| / max |b| over real (non-padding) query rows."""
    a, b = np.asarray(a)[real], np.asarray(b)[real]
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("implementation", KERNELS)
def test_kernel_forward_and_gradients_match_xla(implementation, case):
    segment_ids, heads, kv_heads, scalar, window, softcap = CASES[case]
    scale = (scalar or HEAD_DIM) ** -0.5
    q, k, v = _inputs(heads, kv_heads)
    real = segment_ids > 0
    # Padding queries' outputs are don't-care: the cotangent (like the loss) ignores them.
    cotangent = np.random.default_rng(1).normal(size=q.shape) * real[:, :, None, None]
    cotangent = jnp.asarray(cotangent, jnp.float32)

    def kernel(q, k, v):
        return attention(q, k, v, segment_ids=jnp.asarray(segment_ids), scale=scale, window=window,
                         softcap=softcap, implementation=implementation, block=BLOCK[implementation])

    def reference(q, k, v):
        return _reference(q, k, v, segment_ids, scale, window, softcap)

    out, expected = jax.jit(kernel)(q, k, v), reference(q, k, v)
    assert np.isfinite(np.asarray(out)).all()
    assert _relative(out, expected, real) < 1e-5

    grads = jax.jit(jax.grad(lambda *a: jnp.sum(kernel(*a) * cotangent), argnums=(0, 1, 2)))(q, k, v)
    expected_grads = jax.grad(lambda *a: jnp.sum(reference(*a) * cotangent), argnums=(0, 1, 2))(q, k, v)
    for name, g, e in zip("qkv", grads, expected_grads):
        assert np.abs(np.asarray(e)).max() > 0
        assert _relative(g, e, np.ones(g.shape[:2], bool)) < 1e-5, name


def _far(a, b, real):
    return _relative(a, b, real) > 1e-2


@pytest.mark.parametrize("implementation", KERNELS)
def test_each_feature_changes_the_result(implementation):
    """The kernel's output is far from the reference with any one feature turned off."""
    q, k, v = _inputs(4, 2)
    scale, window, softcap = 8.0 ** -0.5, 48, 5.0

    def kernel(segment_ids, **changes):
        args = dict(scale=scale, window=window, softcap=softcap) | changes
        return attention(q, k, v, segment_ids=jnp.asarray(segment_ids), implementation=implementation,
                         block=BLOCK[implementation], **args)

    packed = kernel(PACKED)
    real = PACKED > 0
    assert _relative(packed, _reference(q, k, v, PACKED, scale, window, softcap), real) < 1e-5
    one_segment = np.where(real, 1, 0).astype(np.int32)
    assert _far(packed, _reference(q, k, v, one_segment, scale, window, softcap), real)
    assert _far(packed, _reference(q, k, v, PACKED, scale, None, softcap), real)
    assert _far(packed, _reference(q, k, v, PACKED, scale, window, None), real)
    assert _far(packed, _reference(q, k, v, PACKED, HEAD_DIM ** -0.5, window, softcap), real)
    # Query head h reads key/value head h // 2, not h % 2.
    swapped = _reference(q[:, :, [0, 2, 1, 3]], k, v, PACKED, scale, window, softcap)[:, :, [0, 2, 1, 3]]
    assert _far(packed, swapped, real)

    left = kernel(LEFT_PADDED, window=None)
    real = LEFT_PADDED > 0
    no_padding = np.ones_like(LEFT_PADDED)
    assert _relative(left, _reference(q, k, v, LEFT_PADDED, scale, None, softcap), real) < 1e-5
    assert _far(left, _reference(q, k, v, no_padding, scale, None, softcap), real)


@pytest.mark.parametrize("mesh_shape,kv_heads", [((2, 2, 2), 1), ((1, 2, 4), 2)],
                         ids=["mqa", "kv_heads_unsplit"])
def test_kernel_under_a_mesh_matches_xla(mesh_shape, kv_heads):
    """Rows split over what of (data, fsdp) divides them; a single key/value head is
    replicated; 2 key/value heads on a tensor axis of 4 leave the heads unsplit."""
    q, k, v = _inputs(4, kv_heads)
    scale = HEAD_DIM ** -0.5

    def kernel(q, k, v, segment_ids):
        return attention(q, k, v, segment_ids=segment_ids, scale=scale, implementation="flash_gpu", block=64)

    args = (q, k, v, jnp.asarray(PACKED))
    with jax.set_mesh(make_mesh(mesh_shape)):
        assert "shard_map[" in str(jax.make_jaxpr(kernel)(*args))
        out = jax.jit(kernel)(*args)
    assert _relative(out, _reference(q, k, v, PACKED, scale), PACKED > 0) < 1e-5


def test_auto_picks_the_platform_kernel_where_rows_fit_its_blocks():
    assert resolve_implementation("auto", 4096, "cpu") == "xla"
    assert resolve_implementation("auto", 4096, "tpu") == "splash"
    assert resolve_implementation("auto", 4096, "gpu") == "flash_gpu"
    assert resolve_implementation("auto", 4000, "tpu") == "xla"  # not a multiple of 128
    assert resolve_implementation("auto", 64, "tpu") == "xla"  # shorter than a block
    assert resolve_implementation("auto", 64, "gpu") == "flash_gpu"
    assert resolve_implementation("auto", 40, "gpu") == "xla"
    assert resolve_implementation("splash", 256, "cpu") == "splash"  # interpret mode
    assert resolve_implementation("xla", 256, "tpu") == "xla"
    with pytest.raises(ValueError, match="attention='splash' runs on tpu"):
        resolve_implementation("splash", 256, "gpu")
    with pytest.raises(ValueError, match="multiple of 128 tokens, got 200"):
        resolve_implementation("splash", 200, "tpu")
    with pytest.raises(ValueError, match="unknown model.attention 'flash'"):
        TransformerConfig(family="llama", vocab_size=8, d_model=8, num_layers=1, num_heads=1,
                          num_kv_heads=1, head_dim=8, mlp_dim=8, attention="flash")


GEMMA2 = TransformerConfig(
    family="gemma2", vocab_size=96, num_image_codes=32, d_model=32, num_layers=2, num_heads=4,
    num_kv_heads=2, head_dim=16, mlp_dim=64, vocab_pad_multiple=64, activation="gelu_tanh",
    scale_embeddings=True, norm_plus_one=True, post_norms=True, attn_logit_softcap=5.0,
    final_logit_softcap=30.0, query_pre_attn_scalar=8.0, sliding_window=48,
    sliding_window_pattern=2, scan_layers=True, remat="full",
)


def _batch(rows=4, seed=0):
    rng = np.random.default_rng(seed)
    segment_ids = np.concatenate([PACKED, LEFT_PADDED])[:rows]
    loss_mask = (rng.random(segment_ids.shape) < 0.9) & (segment_ids > 0)
    out = dict(tokens=rng.integers(0, 96, segment_ids.shape), targets=rng.integers(0, 96, segment_ids.shape),
               loss_mask=loss_mask, segment_ids=segment_ids, positions=_positions(segment_ids))
    return {k: np.asarray(v, np.int32) for k, v in out.items()}


def _gradients(config, mesh, params, batch):
    options = ts.StepOptions(vocab_size=96, text_vocab_size=64)
    parts = state_lib.abstract_parts(config, mesh)
    fn = ts.make_gradient_fn(parts.graphdef, parts.rest, options)
    rows = ts.batch_sharding(mesh)
    jitted = jax.jit(fn, in_shardings=(parts.param_shardings, {k: rows for k in batch}),
                     out_shardings=(parts.param_shardings, NamedSharding(mesh, PartitionSpec())))
    params = jax.device_put(params, parts.param_shardings)
    with jax.set_mesh(mesh):
        traced = jitted.trace(params, batch)
        grads, sums = traced.lower().compile()(params, batch)
    return jax.device_get(grads), jax.device_get(sums), str(traced.jaxpr)


def test_whole_model_splash_equals_xla_on_eight_devices():
    """Gemma 2 (local and global layers under scan and remat, soft-cap, grouped-query
    heads), packed and left-padded rows, on a (data 2, fsdp 2, tensor 2) mesh."""
    mesh = make_mesh((2, 2, 2))
    params = jax.device_get(state_lib.init_parts(GEMMA2, mesh, seed=0).params)
    batch = _batch()
    xla_grads, xla_sums, xla_jaxpr = _gradients(
        dataclasses.replace(GEMMA2, attention="xla"), mesh, params, batch)
    grads, sums, jaxpr = _gradients(dataclasses.replace(GEMMA2, attention="splash"), mesh, params, batch)
    assert "pallas_call[" not in xla_jaxpr
    assert all(f"{p}[" in jaxpr for p in ("pallas_call", "shard_map", "cond", "scan"))
    np.testing.assert_allclose(float(sums.ce), float(xla_sums.ce), rtol=1e-5)
    flat = dict(jax.tree_util.tree_leaves_with_path(grads))
    for path, expected in jax.tree_util.tree_leaves_with_path(xla_grads):
        scale = np.abs(expected).max()
        assert scale > 0
        assert np.abs(flat[path] - expected).max() / scale < 1e-5, jax.tree_util.keystr(path)


LLAMA = TransformerConfig(family="llama", vocab_size=96, num_image_codes=32, d_model=32, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=64, scan_layers=True)


def _runner(config):
    """run(attention, *args, **kwargs): the jitted logits of one set of parameters."""
    one_device = make_mesh((1, 1, 1), jax.devices()[:1])
    params = nnx.to_pure_dict(jax.device_get(state_lib.init_parts(config, one_device, seed=0).params))

    def model(attention):
        return from_params(dataclasses.replace(config, attention=attention), params)

    def run(attention, *args, **kwargs):
        return nnx.jit(lambda m, *a, **kw: m(*a, **kw)[0])(model(attention), *args, **kwargs)

    return model, run


@pytest.mark.parametrize("config", [
    dataclasses.replace(GEMMA2, scan_layers=False, remat="none", num_kv_heads=1),  # static local/global
    LLAMA,  # scanned layers without a window
], ids=["gemma2_mqa_unrolled", "llama_gqa_scanned"])
def test_model_with_flash_gpu_equals_xla(config):
    model, run = _runner(config)
    batch = _batch(rows=2, seed=1)
    inputs = [jnp.asarray(batch[k]) for k in ("tokens", "positions", "segment_ids")]
    assert _relative(run("flash_gpu", *inputs), run("xla", *inputs), batch["segment_ids"] > 0) < 1e-5
    assert "pallas_call[" in str(jax.make_jaxpr(lambda *a: model("flash_gpu")(*a)[0])(*inputs))


def test_decoding_with_a_cache_keeps_xla():
    """A prefill whose width is no multiple of a block (5) runs xla, as does every call on
    a cache that holds entries."""
    model, run = _runner(LLAMA)
    tokens = jnp.asarray(_batch(rows=2)["tokens"][:, :5])
    cached = run("splash", tokens, cache=KVCache.init(LLAMA, 2, 8))
    np.testing.assert_allclose(cached, run("xla", tokens), rtol=1e-5, atol=1e-5)
    written = dataclasses.replace(KVCache.init(LLAMA, 2, 8), empty=False)
    assert "pallas_call[" not in str(jax.make_jaxpr(lambda t: model("splash")(t, cache=written)[0])(tokens))


@pytest.mark.parametrize("implementation", KERNELS)
def test_prefill_into_an_empty_cache_uses_the_kernel(implementation):
    """A left-padded prompt batch one block wide: same hidden states and cache as xla, the
    kernel in the program, and the next (decode) step reads the cache the kernel wrote."""
    model, _ = _runner(LLAMA)
    batch = _batch(rows=2, seed=3)
    width = 128
    segment_ids = np.concatenate([np.zeros((2, width - 100), np.int32), np.ones((2, 100), np.int32)], axis=1)
    segment_ids[1, : width - 7] = 0
    positions = np.maximum(np.cumsum(segment_ids, axis=1) - 1, 0).astype(np.int32)
    tokens = jnp.asarray(batch["tokens"][:, :width])

    def prefill_then_step(attention):
        m = model(attention)
        cache = KVCache.init(LLAMA, 2, width + 1)
        hidden, cache = m.hidden_states(tokens, jnp.asarray(positions), jnp.asarray(segment_ids), cache)
        step, _ = m.hidden_states(tokens[:, :1], jnp.asarray(positions[:, -1:] + 1), jnp.ones((2, 1), jnp.int32),
                                  cache)
        return hidden, cache, step

    hidden, cache, step = nnx.jit(lambda: prefill_then_step(implementation))()
    hidden_xla, cache_xla, step_xla = nnx.jit(lambda: prefill_then_step("xla"))()
    real = segment_ids > 0
    np.testing.assert_allclose(np.asarray(hidden)[real], np.asarray(hidden_xla)[real], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache.segment_ids[:, :width], segment_ids)
    for got, expected in zip(cache.k + cache.v, cache_xla.k + cache_xla.v):  # padding slots are never read
        got, expected = np.swapaxes(got, 1, 2)[:, :width], np.swapaxes(expected, 1, 2)[:, :width]
        np.testing.assert_allclose(got[real], expected[real], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(step, step_xla, rtol=1e-5, atol=1e-5)
    program = str(jax.make_jaxpr(lambda: prefill_then_step(implementation))())
    assert program.count("pallas_call[") >= 1


@pytest.mark.parametrize("implementation,platform,call", [("splash", "tpu", "tpu_custom_call"),
                                                          ("flash_gpu", "cuda", "__gpu$xla.gpu.triton")])
def test_kernels_lower_for_their_accelerator(implementation, platform, call):
    """Interpret mode skips the accelerators' lowering rules (Mosaic's tiling, Triton's
    power-of-two tiles): lower forward and backward for the real backend, in bfloat16."""
    kernel = KERNEL_FUNCTIONS[implementation]
    for heads, kv_heads, head_dim, window, softcap in [(8, 4, 256, 512, 50.0), (8, 1, 64, None, None)]:
        q = jax.ShapeDtypeStruct((2, 1024, heads, head_dim), jnp.bfloat16)
        kv = jax.ShapeDtypeStruct((2, 1024, kv_heads, head_dim), jnp.bfloat16)

        def loss(q, k, v, segment_ids):
            out = kernel(q, k, v, segment_ids, scale=head_dim ** -0.5, window=window, softcap=softcap)
            return out.astype(jnp.float32).sum()

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        text = grad.trace(q, kv, kv, jax.ShapeDtypeStruct((2, 1024), jnp.int32)).lower(
            lowering_platforms=(platform,)).as_text()
        assert call in text


@pytest.mark.slow  # a full TPU compile
def test_train_step_with_auto_attention_compiles_for_a_tpu_slice(monkeypatch):
    """"auto" on a TPU mesh is splash: Gemma 2's scanned, rematerialised layers compile
    for a v5e-4 slice (rows over fsdp, heads over tensor) with Mosaic kernels."""
    pytest.importorskip("libtpu", reason="TPU ahead-of-time compilation needs jax[tpu] (libtpu)")
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compiling only
    from jax.experimental import topologies

    devices = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu").devices
    mesh = make_mesh((1, 2, 2), devices=devices)
    config = dataclasses.replace(GEMMA2, dtype="bfloat16", num_heads=8, num_kv_heads=4, head_dim=256)
    parts = state_lib.abstract_parts(config, mesh)
    fn = ts.make_gradient_fn(parts.graphdef, parts.rest, ts.StepOptions(vocab_size=96, text_vocab_size=64))
    rows = ts.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct((4, 1024), jnp.int32, sharding=rows) for k in ts.BATCH_KEYS}
    jitted = jax.jit(fn, in_shardings=(parts.param_shardings, {k: rows for k in batch}),
                     out_shardings=(parts.param_shardings, NamedSharding(mesh, PartitionSpec())))
    # conftest's "highest" matmul precision asks Mosaic for float32 passes over bfloat16 tiles.
    with jax.set_mesh(mesh), jax.default_matmul_precision("default"):
        compiled = jitted.trace(parts.params, batch).lower().compile()
    assert "tpu_custom_call" in compiled.as_text()
