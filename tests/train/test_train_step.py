"""Train step: sharding equivalence, gradient accumulation, non-finite steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from liquid_jax.model.config import TransformerConfig
from liquid_jax.sharding import make_mesh
from liquid_jax.train import state as state_lib
from liquid_jax.train import train_step as ts

CONFIG = TransformerConfig(
    family="gemma", vocab_size=96, num_image_codes=32, d_model=32, num_layers=2,
    num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, vocab_pad_multiple=64,
    activation="gelu_tanh", scale_embeddings=True, norm_plus_one=True,
)
OPTIONS = ts.StepOptions(vocab_size=96, text_vocab_size=64, z_loss_coef=1e-3, loss_chunk_size=40)


def packed_batch(batch=8, length=16, seed=0):
    """Random rows holding two documents each, with a partial loss mask and padding."""
    rng = np.random.default_rng(seed)
    split = length // 2 - 1
    segment_ids = np.where(np.arange(length) < split, 1, 2)[None].repeat(batch, 0)
    segment_ids[:, -2:] = 0
    positions = np.where(np.arange(length) < split, np.arange(length), np.arange(length) - split)
    loss_mask = (rng.random((batch, length)) < 0.8) & (segment_ids > 0)
    out = dict(
        tokens=rng.integers(0, 96, (batch, length)),
        targets=rng.integers(0, 96, (batch, length)),
        loss_mask=loss_mask,
        segment_ids=segment_ids,
        positions=np.broadcast_to(positions, (batch, length)),
    )
    return {k: np.asarray(v, np.int32) for k, v in out.items()}


def gradients_on(mesh, params_host, batch, options=OPTIONS):
    parts = state_lib.abstract_parts(CONFIG, mesh)
    params = jax.device_put(params_host, parts.param_shardings)
    fn = ts.make_gradient_fn(parts.graphdef, parts.rest, options)
    rows = ts.batch_sharding(mesh)
    jitted = jax.jit(
        fn,
        in_shardings=(parts.param_shardings, {k: rows for k in batch}),
        out_shardings=(parts.param_shardings, NamedSharding(mesh, PartitionSpec())),
    )
    with jax.set_mesh(mesh):
        grads, sums = jitted(params, batch)
    return jax.device_get(grads), jax.device_get(sums)


@pytest.fixture(scope="module")
def host_params():
    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    return jax.device_get(state_lib.init_parts(CONFIG, mesh, seed=0).params)


def test_sharded_loss_and_gradients_equal_single_device(host_params):
    batch = packed_batch()
    one = gradients_on(make_mesh((1, 1, 1), jax.devices()[:1]), host_params, batch)
    eight = gradients_on(make_mesh((2, 2, 2)), host_params, batch)
    np.testing.assert_allclose(float(eight[1].ce), float(one[1].ce), rtol=1e-5)
    np.testing.assert_allclose(float(eight[1].z), float(one[1].z), rtol=1e-5)
    flat_one = jax.tree_util.tree_leaves_with_path(one[0])
    flat_eight = dict(jax.tree_util.tree_leaves_with_path(eight[0]))
    for path, g in flat_one:
        np.testing.assert_allclose(
            flat_eight[path], g, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path)
        )
    assert sum(float(np.abs(g).sum()) for _, g in flat_one) > 0


def test_gradient_accumulation_equals_full_batch(host_params):
    mesh = make_mesh((1, 2, 1), jax.devices()[:2])
    batch = packed_batch(seed=1)
    full = gradients_on(mesh, host_params, batch)
    accumulated = gradients_on(
        mesh, host_params, batch, ts.StepOptions(**{**OPTIONS.__dict__, "grad_accum_steps": 4})
    )
    for a, b in zip(jax.tree.leaves(accumulated[0]), jax.tree.leaves(full[0])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(accumulated[1], full[1]):
        np.testing.assert_allclose(float(a), float(b), rtol=1e-5)


def test_split_microbatches_takes_strided_rows():
    x = np.arange(12).reshape(6, 2)
    micro = ts.split_microbatches({"x": jnp.asarray(x)}, 3)["x"]
    np.testing.assert_array_equal(micro[1], x[1::3])
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps 4"):
        ts.split_microbatches({"x": jnp.asarray(x)}, 4)


def _run_step(options, params_host, tx):
    mesh = make_mesh((2, 1, 1), jax.devices()[:2])
    parts = state_lib.abstract_parts(CONFIG, mesh)
    params = jax.device_put(params_host, parts.param_shardings)
    opt_shardings = state_lib.opt_state_shardings(tx, params, mesh)
    opt_state = state_lib.init_opt_state(tx, params, opt_shardings)
    step = ts.make_train_step(parts.graphdef, parts.rest, tx, optax.constant_schedule(0.1), options)
    jitted = ts.jit_train_step(step, parts.param_shardings, opt_shardings, mesh, donate=False)
    with jax.set_mesh(mesh):
        new_params, new_opt, metrics = jitted(params, opt_state, packed_batch())
    return jax.device_get((new_params, new_opt, metrics))


def test_non_finite_step_leaves_state_unchanged(host_params):
    tx = optax.adamw(0.1)
    nan_options = ts.StepOptions(**{**OPTIONS.__dict__, "z_loss_coef": float("nan")})
    new_params, new_opt, metrics = _run_step(nan_options, host_params, tx)
    assert not bool(metrics["finite"])
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(host_params)):
        np.testing.assert_array_equal(a, b)
    assert int(optax.tree_utils.tree_get(new_opt, "count")) == 0

    new_params, new_opt, metrics = _run_step(OPTIONS, host_params, tx)
    assert bool(metrics["finite"])
    assert int(optax.tree_utils.tree_get(new_opt, "count")) == 1
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(host_params))]
    assert all(changed)
    np.testing.assert_allclose(float(metrics["learning_rate"]), 0.1)
    np.testing.assert_allclose(
        float(metrics["loss"]), float(metrics["ce_loss"]) + float(metrics["z_loss"]), rtol=1e-6
    )
