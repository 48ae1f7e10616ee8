"""Prefill plus a jitted ``lax.while_loop`` decode over a static KV cache.

``generate_tokens`` is the one token-level sampler behind text generation, image
understanding and text-to-image. Prompts are left padded into one batch; every row
counts its positions from its own first real token. The cache holds
``prompt_len + num_steps - 1`` slots (rounded up to a bucket so similar requests reuse
the compiled program) and every size is checked before anything is computed.

With ``guided=True`` the batch is [conditional rows; unconditional rows] and each step
samples one token per pair from ``u + scale * (c - u)``, which is fed to both rows.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import Transformer
from liquid_jax.sample.filters import SamplingParams, choose_tokens
from liquid_jax.sample.placement import BatchPlacement

PROMPT_BUCKET = 16
CACHE_BUCKET = 64


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    """Left-padded prompts: tokens, segment ids (1 = token, 0 = padding), positions [B, T]."""

    tokens: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """Real (unpadded) length of each row."""
        return self.segment_ids.sum(axis=1)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> PromptBatch:
    """Packs token lists into one left-padded batch of width ``length`` (default: longest)."""
    if not len(prompts):
        raise ValueError("no prompts given")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty; every prompt needs at least one token")
    width = max(lengths) if length is None else length
    if max(lengths) > width:
        raise ValueError(f"a prompt of {max(lengths)} tokens does not fit a batch of width {width}")
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    segment_ids = np.zeros((len(prompts), width), np.int32)
    positions = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        n = len(prompt)
        tokens[row, width - n:] = np.asarray(prompt, np.int32)
        segment_ids[row, width - n:] = 1
        positions[row, width - n:] = np.arange(n)
    return PromptBatch(tokens, segment_ids, positions)


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """Everything static about one generation (hashable: it keys the compiled program)."""

    num_steps: int
    cache_len: int
    vocab_start: int
    vocab_end: int
    sampling: SamplingParams
    guided: bool
    stop_tokens: tuple[int, ...]
    pad_id: int
    keep_logits: bool = False
    # On CPU a weight slice is a copy, so the layers' weights are sliced once per
    # generation (a second copy of them); accelerators fuse the slice into the matmul.
    slice_weights_once: bool = False


# Above this many bytes of layer weights the CPU sampler slices them at every step
# rather than hold a second copy (slower, but a large model still fits in memory).
SLICE_ONCE_MAX_BYTES = 4 * 2**30


def _slice_weights_once(model: Transformer) -> bool:
    if jax.default_backend() != "cpu":
        return False
    layer_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(nnx.state(model.layers)))
    return layer_bytes <= SLICE_ONCE_MAX_BYTES


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """The loop carry. ``tokens`` [B, num_steps] holds chosen tokens (pad after a stop)."""

    cache: KVCache
    last_token: jax.Array  # [B] token fed at the next step
    next_position: jax.Array  # [B] its position
    tokens: jax.Array
    done: jax.Array  # [B] bool: a stop token was produced
    step: jax.Array  # scalar: tokens produced so far
    key: jax.Array
    guidance_scale: jax.Array
    logits: jax.Array | None  # [B, num_steps, vocab slice] raw logits, when kept


def _guided(logits: jax.Array, scale: jax.Array) -> jax.Array:
    conditional, unconditional = jnp.split(logits, 2, axis=0)
    return unconditional + scale * (conditional - unconditional)


def _choose(logits: jax.Array, state_key: jax.Array, step: jax.Array, scale: jax.Array, plan: DecodePlan):
    key = jax.random.fold_in(state_key, step)
    if plan.guided:
        half = choose_tokens(_guided(logits, scale), key, plan.sampling)
        chosen = jnp.concatenate([half, half])
    else:
        chosen = choose_tokens(logits, key, plan.sampling)
    return chosen + plan.vocab_start


def _advance(state: DecodeState, logits: jax.Array, plan: DecodePlan) -> DecodeState:
    """Chooses and records the tokens of step ``state.step``; rows already done write
    padding."""
    chosen = _choose(logits, state.key, state.step, state.guidance_scale, plan)
    token = jnp.where(state.done, plan.pad_id, chosen)
    done = state.done
    if plan.stop_tokens:
        done = done | jnp.isin(token, jnp.asarray(plan.stop_tokens, jnp.int32))
    tokens = jax.lax.dynamic_update_slice(state.tokens, token[:, None], (0, state.step))
    kept = state.logits
    if plan.keep_logits:
        kept = jax.lax.dynamic_update_slice(kept, logits[:, None], (0, state.step, 0))
    return dataclasses.replace(
        state, last_token=token, tokens=tokens, done=done, step=state.step + 1, logits=kept
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "plan"))
def _prefill(graphdef, params, tokens, segment_ids, positions, key, guidance_scale, *, plan: DecodePlan):
    model = nnx.merge(graphdef, params)
    batch = tokens.shape[0]
    cache = KVCache.init(model.config, batch, plan.cache_len)
    hidden, cache = model.hidden_states(tokens, positions, segment_ids, cache)
    logits = model.project(hidden[:, -1], plan.vocab_start, plan.vocab_end)
    state = DecodeState(
        cache=cache,
        last_token=jnp.zeros((batch,), jnp.int32),
        next_position=positions[:, -1] + 1,
        tokens=jnp.full((batch, plan.num_steps), plan.pad_id, jnp.int32),
        done=jnp.zeros((batch,), bool),
        step=jnp.zeros((), jnp.int32),
        key=key,
        guidance_scale=jnp.asarray(guidance_scale, jnp.float32),
        logits=jnp.zeros((batch, plan.num_steps, logits.shape[-1]), jnp.float32)
        if plan.keep_logits else None,
    )
    return _advance(state, logits, plan)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoopWeights:
    """Weights every decode step reads, sliced out of the model once per generation."""

    layers: list[nnx.State] | None  # per-layer weights, or None: sliced inside the step
    head: jax.Array  # the LM-head rows of the sampled vocabulary slice


@functools.partial(jax.jit, static_argnames=("graphdef", "plan"))
def _loop_weights(graphdef, params, *, plan: DecodePlan) -> LoopWeights:
    model = nnx.merge(graphdef, params)
    return LoopWeights(
        layers=model.layer_params() if plan.slice_weights_once else None,
        head=model.head_rows(plan.vocab_start, plan.vocab_end),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "plan"), donate_argnames=("state",))
def _decode(
    graphdef, params, weights: LoopWeights, state: DecodeState, until_step, *, plan: DecodePlan
) -> DecodeState:
    """Decodes one token per row until ``until_step`` tokens exist or every row is done."""
    model = nnx.merge(graphdef, params)

    def keep_going(s: DecodeState):
        return (s.step < until_step) & ~jnp.all(s.done)

    def one_step(s: DecodeState) -> DecodeState:
        ones = jnp.ones_like(s.last_token)[:, None]
        hidden, cache = model.hidden_states(
            s.last_token[:, None], s.next_position[:, None], ones, s.cache, weights.layers
        )
        logits = model.project(hidden[:, 0], plan.vocab_start, plan.vocab_end, weights.head)
        s = dataclasses.replace(s, cache=cache, next_position=s.next_position + 1)
        return _advance(s, logits, plan)

    return jax.lax.while_loop(keep_going, one_step, state)


@dataclasses.dataclass(frozen=True)
class Generated:
    """Tokens [B, num_steps] (padding after a row's stop token), each row's length (tokens
    up to and including the stop token) and, when asked for, the raw logits of every
    step [B, num_steps, vocab slice] (guidance and filters not applied)."""

    tokens: np.ndarray
    lengths: np.ndarray
    logits: np.ndarray | None = None


def plan_lengths(
    model_context: int, longest_prompt: int, num_steps: int, cache_len: int | None
) -> tuple[int, int]:
    """(batch width, cache slots) for a request, or ValueError if it cannot fit.

    Positions run up to ``longest_prompt + num_steps - 1`` and must stay inside the
    model's context; the cache needs ``width + num_steps - 1`` slots. Without an
    explicit ``cache_len`` both sizes are rounded up to buckets.
    """
    if num_steps < 1:
        raise ValueError(f"the number of tokens to generate must be >= 1, got {num_steps}")
    if longest_prompt + num_steps > model_context:
        raise ValueError(
            f"a prompt of {longest_prompt} tokens plus {num_steps} new tokens needs "
            f"{longest_prompt + num_steps} positions, more than the model's context of {model_context}"
        )
    if cache_len is not None:
        needed = longest_prompt + num_steps - 1
        if needed > cache_len:
            raise ValueError(
                f"a prompt of {longest_prompt} tokens plus {num_steps} new tokens needs {needed} "
                f"cache slots, more than the requested cache_len {cache_len}"
            )
        return longest_prompt, cache_len
    width = -(-longest_prompt // PROMPT_BUCKET) * PROMPT_BUCKET
    return width, -(-(width + num_steps - 1) // CACHE_BUCKET) * CACHE_BUCKET


def generate_tokens(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    num_steps: int,
    *,
    sampling: SamplingParams,
    seed: int = 0,
    stop_tokens: Sequence[int] = (),
    vocab_range: tuple[int, int] | None = None,
    guidance_scale: float | None = None,
    cache_len: int | None = None,
    keep_logits: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    progress: str | None = None,
    chunk: int = 64,
) -> Generated:
    """Generates up to ``num_steps`` tokens after each prompt (token-id lists).

    ``vocab_range`` [start, end) limits the LM-head rows computed and sampled (default:
    the real vocabulary). With ``guidance_scale``, ``prompts`` are the conditional rows
    followed by as many unconditional rows; both halves of the result are identical.
    Generation stops early once every row has produced one of ``stop_tokens``.
    ``progress`` names a tqdm bar (decoding then runs in chunks of ``chunk`` steps).
    With ``mesh``, rows are split over its batch axes and weights by the logical rules.
    """
    config = model.config
    start, end = vocab_range if vocab_range is not None else (0, config.vocab_size)
    if not 0 <= start < end <= config.vocab_size:
        raise ValueError(f"vocab_range [{start}, {end}) is outside the vocabulary [0, {config.vocab_size})")
    if guidance_scale is not None and len(prompts) % 2:
        raise ValueError(
            f"guided generation needs conditional and unconditional rows in pairs, got {len(prompts)} rows"
        )
    longest = max((len(p) for p in prompts), default=0)
    width, cache_len = plan_lengths(config.max_position_embeddings, longest, num_steps, cache_len)
    pad_id = config.special_tokens.pad
    batch = left_pad(prompts, pad_id, width)
    plan = DecodePlan(
        num_steps=num_steps,
        cache_len=cache_len,
        vocab_start=start,
        vocab_end=end,
        sampling=sampling,
        guided=guidance_scale is not None,
        stop_tokens=tuple(int(t) for t in stop_tokens),
        pad_id=pad_id,
        keep_logits=keep_logits,
        slice_weights_once=_slice_weights_once(model),
    )
    placement = BatchPlacement(mesh, len(prompts), guided=plan.guided)
    graphdef, params = nnx.split(model)
    params = placement.params(params)
    inputs = [placement.rows(a) for a in (batch.tokens, batch.segment_ids, batch.positions)]
    scale = 1.0 if guidance_scale is None else guidance_scale
    with tqdm(total=num_steps, desc=progress, unit="tok", disable=progress is None) as bar, placement.context():
        state = _prefill(graphdef, params, *inputs, jax.random.key(seed), scale, plan=plan)
        weights = _loop_weights(graphdef, params, plan=plan) if num_steps > 1 else None
        step = 1
        bar.update(1)
        while step < num_steps:
            until = num_steps if progress is None else min(step + chunk, num_steps)
            state = _decode(graphdef, params, weights, state, until, plan=plan)
            reached = int(state.step)
            bar.update(reached - step)
            step = reached
            if reached < until:  # every row has stopped
                break
    tokens = placement.take(np.asarray(jax.device_get(state.tokens)))
    logits = placement.take(np.asarray(jax.device_get(state.logits))) if keep_logits else None
    return Generated(tokens=tokens, lengths=_lengths(tokens, plan.stop_tokens), logits=logits)


def _lengths(tokens: np.ndarray, stop_tokens: tuple[int, ...]) -> np.ndarray:
    if not stop_tokens:
        return np.full((tokens.shape[0],), tokens.shape[1], np.int32)
    stopped = np.isin(tokens, stop_tokens)
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1) + 1, tokens.shape[1])
    return first.astype(np.int32)
