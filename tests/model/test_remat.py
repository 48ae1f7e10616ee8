"""Remat policies: every one gives the gradients of no remat, and each keeps what it says.

What a policy keeps is read off the backward pass itself: the matmuls (``dot_general``)
and attention-kernel calls (``pallas_call``) that the gradient's program runs again.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from liquid_jax.model import remat
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.transformer import Transformer

LENGTH = 128  # one splash block
CONFIG = TransformerConfig(family="gemma2", vocab_size=96, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                           head_dim=8, mlp_dim=64, sliding_window=48, sliding_window_pattern=2,
                           attn_logit_softcap=20.0, query_pre_attn_scalar=8, post_norms=True, attention="xla")


def _loss(config, params, tokens):
    model = nnx.merge(*nnx.split(Transformer(config, rngs=nnx.Rngs(0)))[:1], params)
    hidden, _ = model.hidden_states(tokens)
    return jnp.mean(model.project(hidden) ** 2)


def _params():
    state = nnx.state(Transformer(CONFIG, rngs=nnx.Rngs(0)))
    return jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape, a.dtype), state)


def _tokens():
    return jax.random.randint(jax.random.key(2), (2, LENGTH), 0, CONFIG.vocab_size)


def _count(config, primitive):
    """How often ``primitive`` occurs in the jaxpr of the loss's gradient (layers scanned:
    the layer's forward and backward bodies appear once each)."""
    config = config.replace(scan_layers=True)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: _loss(config, p, _tokens())))(_params())
    return str(jaxpr).count(f"{primitive}[")


@pytest.mark.parametrize("policy", [n for n in remat.NAMES if n != "none"])
def test_every_policy_gives_the_gradients_of_no_remat(policy):
    params, tokens = _params(), _tokens()
    grad = jax.jit(jax.grad(_loss, 1), static_argnums=0)
    expected = grad(CONFIG, params, tokens)
    variant = CONFIG.replace(remat=policy, scan_layers=True)
    got = grad(variant, params, tokens)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)
    assert jax.tree.structure(nnx.state(Transformer(variant, rngs=nnx.Rngs(0)))) == jax.tree.structure(params)


def test_policies_recompute_the_matmuls_they_do_not_keep():
    dots = {name: _count(CONFIG.replace(remat=name), "dot_general") for name in remat.NAMES}
    recomputed = {name: count - dots["none"] for name, count in dots.items()}
    # A layer's forward has 9 matmuls: q, k, v, scores, values, o, gate, up, down.
    assert recomputed == {"none": 0, "full": 9, "dots": 0, "dots_no_batch": 2,  # scores, values
                          "save_qkv_proj": 6,  # all but q, k, v
                          "minimal": 1, "minimal_offloaded": 1}  # the scores only


def test_minimal_keeps_the_attention_kernels_output():
    kernel = CONFIG.replace(attention="splash")
    calls = {name: _count(kernel.replace(remat=name), "pallas_call") for name in ("none", "full", "dots", "minimal")}
    # The kernel is not a matmul: "dots" runs its forward again in the backward pass, "minimal" does not.
    assert calls["minimal"] == calls["none"] < calls["dots"] == calls["full"]
