"""Chunked cross-entropy and z-loss against a direct numpy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liquid_jax.train import loss as loss_lib


def _numpy_reference(h, w, targets, mask, text_vocab, coef):
    logits = (h @ w).astype(np.float64)
    peak = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - peak).sum(-1)) + peak[..., 0]
    target_logit = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    ce = lse - target_logit
    m = mask.astype(bool)
    image = m & (targets >= text_vocab)
    text = m & (targets < text_vocab)
    out = {
        "ce_loss": ce[m].mean(),
        "z_loss": coef * (lse[m] ** 2).mean(),
        "text_loss": ce[text].mean(),
        "image_loss": ce[image].mean(),
    }
    out["loss"] = out["ce_loss"] + out["z_loss"]
    # d(loss)/d(logits) = (softmax - onehot + 2 coef lse softmax) * mask / count
    probs = np.exp(logits - lse[..., None])
    onehot = np.eye(w.shape[1])[targets]
    dlogits = (probs - onehot + 2 * coef * lse[..., None] * probs) * m[..., None] / m.sum()
    grad_w = np.einsum("btd,btv->dv", h, dlogits)
    return out, grad_w


@pytest.mark.parametrize("chunk", [None, 7, 16, 50])
def test_chunked_loss_and_gradient_match_numpy(chunk):
    rng = np.random.default_rng(0)
    batch, length, dim, vocab, text_vocab, coef = 3, 5, 8, 50, 30, 1e-2
    h = rng.normal(size=(batch, length, dim)).astype(np.float32)
    w = rng.normal(size=(dim, vocab)).astype(np.float32) * 2.0
    targets = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
    targets[0, :2] = [35, 45]  # make sure both modalities are present
    targets[1, :2] = [3, 4]
    mask = (rng.random((batch, length)) < 0.7).astype(np.int32)
    mask[:2, :2] = 1
    expected, expected_grad = _numpy_reference(h, w, targets, mask, text_vocab, coef)

    def total(w):
        sums = loss_lib.loss_sums(
            lambda s, e: jnp.einsum("btd,dv->btv", h, w[:, s:e]),
            targets, mask, vocab_size=vocab, text_vocab_size=text_vocab, chunk_size=chunk,
        )
        return loss_lib.objective(sums, coef, sums.count), sums

    (value, sums), grad = jax.value_and_grad(total, has_aux=True)(jnp.asarray(w))
    metrics = loss_lib.loss_metrics(sums, coef)
    for key, want in expected.items():
        np.testing.assert_allclose(float(metrics[key]), want, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(float(value), expected["loss"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-6)
    assert int(metrics["loss_tokens"]) == mask.sum()
    assert int(metrics["image_tokens"]) == (mask.astype(bool) & (targets >= text_vocab)).sum()


def test_padded_rows_are_never_projected():
    seen = []

    def logits_fn(start, end):
        seen.append((start, end))
        return jnp.zeros((1, 2, end - start))

    loss_lib.loss_sums(
        logits_fn, jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2)),
        vocab_size=10, text_vocab_size=6, chunk_size=4,
    )
    assert seen == [(0, 4), (4, 8), (8, 10)]


def test_large_logits_stay_finite():
    # logits around 1e4: a naive exp would overflow in fp32
    h = np.full((1, 2, 1), 1.0, np.float32)
    w = np.array([[1e4, 1e4 - 1.0, 0.0, -1e4]], np.float32)
    sums = loss_lib.loss_sums(
        lambda s, e: jnp.einsum("btd,dv->btv", h, w[:, s:e]),
        jnp.array([[1, 0]]), jnp.ones((1, 2)), vocab_size=4, text_vocab_size=4, chunk_size=2,
    )
    want = np.log1p(np.exp(-1.0))
    # fp32 resolution at 1e4 is ~1e-3
    np.testing.assert_allclose(float(sums.ce), 1.0 + 2 * want, atol=2e-3)
