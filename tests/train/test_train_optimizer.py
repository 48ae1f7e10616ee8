"""Learning-rate schedules, weight-decay mask and clipping against closed forms."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from liquid_jax.sharding import logical_param
from liquid_jax.train import config as config_lib
from liquid_jax.train import optimizer


def opt_config(**changes):
    """The default (paper) optimizer section with ``changes``."""
    config = config_lib.train_config(ml_collections.ConfigDict()).optimizer
    config.update(changes)
    return config


def test_cosine_with_linear_warmup_matches_formula():
    config = opt_config(learning_rate=2e-5, warmup_fraction=0.03, end_lr_fraction=0.1)
    total = 1000
    schedule = optimizer.learning_rate_schedule(config, total)
    warmup = 30
    for step in [0, 1, 15, 29, 30, 31, 500, 999, 1000]:
        if step < warmup:
            want = 2e-5 * step / warmup
        else:
            progress = (step - warmup) / (total - warmup)
            want = 2e-6 + (2e-5 - 2e-6) * 0.5 * (1 + math.cos(math.pi * progress))
        np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-5, atol=1e-12, err_msg=str(step))


def test_constant_schedule_after_warmup():
    schedule = optimizer.learning_rate_schedule(opt_config(schedule="constant", warmup_steps=4), 100)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 2, 4, 50, 99)], [0, 1e-5, 2e-5, 2e-5, 2e-5], rtol=1e-6)
    with pytest.raises(ValueError, match="optimizer.schedule 'linear'"):
        optimizer.learning_rate_schedule(opt_config(schedule="linear"), 100)


class Stacked(nnx.Module):
    def __init__(self):
        self.kernel = logical_param(jnp.ones((2, 3, 4)), ("layers", "embed", "mlp"))
        self.scale = logical_param(jnp.ones((2, 3)), ("layers", "norm"))  # 2-D, but a vector per layer
        self.table = logical_param(jnp.ones((5, 3)), ("vocab", "embed"))


def test_weight_decay_skips_norm_scales_even_when_stacked():
    params = nnx.state(Stacked(), nnx.Param)
    mask = optimizer.decay_mask(params)
    assert mask["kernel"] is True and mask["table"] is True and mask["scale"] is False
    tx, _ = optimizer.make_optimizer(
        opt_config(schedule="constant", warmup_steps=0, learning_rate=0.1, weight_decay=0.5), 10
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["kernel"][...], 1 - 0.1 * 0.5)
    np.testing.assert_allclose(new["table"][...], 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(new["scale"][...], 1.0)


def test_global_norm_clipping_bounds_the_first_adam_step():
    # Adam normalises the step itself, so check what it was fed: its first moment after
    # one step is (1 - b1) x the clipped gradient.
    params = {"w": jnp.zeros((4,))}
    grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # global norm 50
    clip = optax.clip_by_global_norm(0.5)
    clipped, _ = clip.update(grads, clip.init(params))
    np.testing.assert_allclose(np.asarray(clipped["w"]), [0.3, 0.4, 0.0, 0.0], rtol=1e-6)
    tx, _ = optimizer.make_optimizer(opt_config(grad_clip_norm=0.5), 10)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    mu = optax.tree_utils.tree_get(state, "mu")
    np.testing.assert_allclose(np.asarray(mu["w"]), 0.1 * np.array([0.3, 0.4, 0, 0]), rtol=1e-6)
