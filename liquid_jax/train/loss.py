"""Next-token cross-entropy and logit z-loss, computed in vocabulary chunks.

Liquid's objective is plain cross-entropy over the loss-masked target tokens plus an
optional z-loss ``coef * logsumexp(logits)**2`` (Baichuan 2's stabiliser, used by the
paper for 7B+ models). A 264k-row LM head would make ``[tokens, vocab]`` fp32 logits the
largest activation of the step, so the log-partition is accumulated one vocabulary
chunk at a time; with several chunks, each is rematerialised in the backward pass, so
at most one ``[tokens, chunk]`` block of logits is alive at once. A single chunk
(``chunk_size`` 0 or >= the vocabulary) keeps its logits for the backward pass, which
saves recomputing the LM-head matmul when the full logits fit in memory.

Everything is returned as sums and counts (not means) so that gradient-accumulation
micro-batches and data-parallel shards combine exactly.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# logits_fn(vocab_start, vocab_end) -> fp32 logits [..., vocab_end - vocab_start]
LogitsFn = Callable[[int, int], jax.Array]


class LossSums(NamedTuple):
    """Sums over loss-masked tokens; divide by the counts to get means."""

    ce: jax.Array  # sum of cross-entropy
    z: jax.Array  # sum of logsumexp(logits)**2 (without the coefficient)
    count: jax.Array  # number of loss tokens
    text_ce: jax.Array
    text_count: jax.Array
    image_ce: jax.Array
    image_count: jax.Array


def vocab_chunks(vocab_size: int, chunk_size: int | None) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` ranges covering ``[0, vocab_size)``."""
    if not chunk_size or chunk_size >= vocab_size:
        return [(0, vocab_size)]
    return [(s, min(s + chunk_size, vocab_size)) for s in range(0, vocab_size, chunk_size)]


def log_partition_and_target_logit(
    logits_fn: LogitsFn,
    targets: jax.Array,
    vocab_size: int,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``logsumexp`` over the real vocabulary and the target's logit, chunk by chunk.

    Only rows ``[0, vocab_size)`` are projected, so padded LM-head rows never enter.
    """

    chunks = vocab_chunks(vocab_size, chunk_size)

    def one_chunk(start: int, end: int):
        def chunk_stats(targets):
            logits = logits_fn(start, end).astype(jnp.float32)
            peak = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
            lse = jnp.log(jnp.sum(jnp.exp(logits - peak), axis=-1)) + peak[..., 0]
            local = targets - start
            inside = (local >= 0) & (local < end - start)
            picked = jnp.take_along_axis(
                logits, jnp.clip(local, 0, end - start - 1)[..., None], axis=-1
            )[..., 0]
            return lse, jnp.where(inside, picked, 0.0)

        # One chunk: keep its logits (the backward pass needs all of them at once anyway).
        return (chunk_stats if len(chunks) == 1 else jax.checkpoint(chunk_stats))(targets)

    lses, picks = zip(*(one_chunk(s, e) for s, e in chunks))
    lse = jax.nn.logsumexp(jnp.stack(lses, axis=-1), axis=-1)
    return lse, sum(picks)


def loss_sums(
    logits_fn: LogitsFn,
    targets: jax.Array,
    loss_mask: jax.Array,
    *,
    vocab_size: int,
    text_vocab_size: int,
    chunk_size: int | None = None,
) -> LossSums:
    """Cross-entropy and z sums over ``loss_mask`` tokens, split into text and image.

    Image targets are token ids ``>= text_vocab_size`` (the appended VQ codes).
    """
    lse, target_logit = log_partition_and_target_logit(logits_fn, targets, vocab_size, chunk_size)
    mask = loss_mask.astype(jnp.float32)
    ce = (lse - target_logit) * mask
    image = (targets >= text_vocab_size).astype(jnp.float32) * mask
    text = mask - image
    return LossSums(
        ce=jnp.sum(ce),
        z=jnp.sum(jnp.square(lse) * mask),
        count=jnp.sum(mask),
        text_ce=jnp.sum(ce * text),
        text_count=jnp.sum(text),
        image_ce=jnp.sum(ce * image),
        image_count=jnp.sum(image),
    )


def objective(sums: LossSums, z_loss_coef: float, normaliser: jax.Array) -> jax.Array:
    """The differentiated scalar: ``(ce + coef * z) / normaliser``.

    ``normaliser`` is the loss-token count of the whole (global, all micro-batches)
    batch, so summing micro-batch objectives gives the full-batch mean.
    """
    return (sums.ce + z_loss_coef * sums.z) / jnp.maximum(normaliser, 1.0)


def loss_metrics(sums: LossSums, z_loss_coef: float) -> dict[str, jax.Array]:
    """Means for reporting: total loss, its parts, and per-modality cross-entropy."""

    def mean(total, count):
        return total / jnp.maximum(count, 1.0)

    ce = mean(sums.ce, sums.count)
    z_loss = z_loss_coef * mean(sums.z, sums.count)
    return {
        "loss": ce + z_loss,
        "ce_loss": ce,
        "z_loss": z_loss,
        "text_loss": mean(sums.text_ce, sums.text_count),
        "image_loss": mean(sums.image_ce, sums.image_count),
        "loss_tokens": sums.count,
        "text_tokens": sums.text_count,
        "image_tokens": sums.image_count,
    }
