"""Speculative Jacobi decoding of image codes with coupled drafts: fewer forward passes,
exactly the distribution of token-by-token sampling.

Each image keeps a window of ``L`` tokens after its committed codes: the last committed
code and ``L - 1`` drafts ``d_i``, each stored with the distribution ``q_i`` it was drawn
from. One forward pass over the window (both guidance rows, on top of the committed
prefix's KV cache) gives the target distributions ``p_i`` exactly as the plain sampler
computes them (guidance, temperature, top-k, top-p). Left to right, draft ``d_i`` is
accepted with probability ``min(1, p_i(d_i) / q_i(d_i))``; at the first rejection a
token is drawn from ``normalise(max(0, p_i - q_i))`` (the residual, never re-filtered)
and the iteration stops; if every draft is accepted, a bonus token is drawn from the
last position's ``p``. Each accepted or drawn token therefore has the target
distribution given the committed prefix (the speculative-sampling argument), and an
iteration commits between 1 and ``L`` codes. The positions after the new prefix are
redrafted from this iteration's ``p`` (so ``q := p``, never a stale ``q``); positions
past the window take the last ``p`` as their proposal. KV entries past the committed
prefix are overwritten by the next window, which always reaches further.

Redrafts are coupled to the previous drafts so that they stop changing once the
context does (speculative coupled decoding):

* ``"gumbel"`` (default): a draft at code index ``c`` is ``argmax(log q + g_c)`` with
  Gumbel noise ``g_c`` fixed per image and code index. ``q`` at ``c`` depends only on
  tokens before ``c``, so ``g_c`` is independent of it and the draft is an exact sample
  of ``q``; a position is verified once, and its acceptance and residual randomness is
  used once, so exactness holds.
* ``"maximal"``: the old draft is kept with probability ``min(1, q_new(d) / q_old(d))``,
  else replaced by a draw from ``normalise(max(0, q_new - q_old))``: an exact sample of
  ``q_new`` that equals the old draft as often as any coupling can.

A draft library (codes of known images at the same grid, for example the pre-tokenized
training images) adds retrieval drafting: after each iteration an image's drafts are
copied from the library row whose codes agree with its last committed codes over the
longest run (same code indices; the first such row on ties, so rows go most frequent
first), with a one-hot proposal (the draft is a function of the committed codes, so
``q`` is a point mass, accepted with probability ``p(d)``). Where no row agrees with the
last committed code the Jacobi drafts stand. The library only changes how many codes
each pass commits, never the distribution.

All randomness is keyed by the seed, the image's index in the request and the code's
absolute index, so an image does not depend on the others in its batch or on the
window length's batching, and a seed and window length give the same images every
time. With greedy settings (top-k 1) every iteration accepts exactly the drafts that
equal the arg-max, and the codes are those of the plain sampler for any window.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from liquid_jax.model.kv_cache import KVCache
from liquid_jax.model.transformer import Transformer
from liquid_jax.sample.decode_loop import (
    CACHE_BUCKET, LoopWeights, _guided, _loop_weights, _slice_weights_once, left_pad, plan_lengths,
)
from liquid_jax.sample.filters import SamplingParams, draw_tokens, filter_logits
from liquid_jax.sample.placement import BatchPlacement

COUPLINGS = ("gumbel", "maximal")
# What a random number is for (folded into the key of an image's code index).
_GUMBEL, _ACCEPT, _RESIDUAL, _BONUS, _KEEP, _REDRAW = range(6)


@dataclasses.dataclass(frozen=True)
class SpeculativePlan:
    """Everything static about one speculative generation (it keys the compiled program)."""

    window: int
    coupling: str
    num_steps: int
    width: int
    cache_len: int
    vocab_start: int
    vocab_end: int
    sampling: SamplingParams
    guided: bool
    keep_logits: bool
    slice_weights_once: bool


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpeculativeState:
    """The loop carry; per image: committed codes (vocabulary-slice indices, a window's
    length of slack at the end), their count, the drafts and their proposals."""

    cache: KVCache
    codes: jax.Array  # [B, N + L]
    count: jax.Array  # [B]
    drafts: jax.Array  # [B, L - 1] for code indices count .. count + L - 2
    proposals: jax.Array  # [B, L - 1, V] the distributions the drafts were drawn from
    first_position: jax.Array  # [R] position of code 0 in each row (prompts differ in length)
    image_ids: jax.Array  # [B] index of the image in the request (keys its randomness)
    forwards: jax.Array  # [B] forward passes spent on each image (prefill included)
    commits: jax.Array  # [L + 1] histogram of codes committed per forward pass
    iteration: jax.Array
    key: jax.Array
    guidance_scale: jax.Array
    library: jax.Array  # [M, N] codes of known images drafts are copied from (M may be 0)
    logits: jax.Array | None  # [R, N + L, V] raw logits behind each committed code, when kept


@dataclasses.dataclass(frozen=True)
class SpeculativeResult:
    """Codes [B, num_steps] (vocabulary-slice offset added back), forward passes per image,
    and the histogram of codes committed per forward pass (index: codes)."""

    tokens: np.ndarray
    forwards: np.ndarray
    commits: np.ndarray
    logits: np.ndarray | None = None


def _keys(state: SpeculativeState, codes: jax.Array, purpose: int, iteration: jax.Array | None = None) -> jax.Array:
    """Keys [B, n] of each image's code indices ``codes`` [B, n] for ``purpose``."""

    def one(image, code):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(state.key, image), code), purpose)
        return key if iteration is None else jax.random.fold_in(key, iteration)

    return jax.vmap(jax.vmap(one, in_axes=(None, 0)))(state.image_ids, codes)


def _target(logits: jax.Array, scale: jax.Array, plan: SpeculativePlan) -> jax.Array:
    """Probabilities [B, T, V] the plain sampler draws from, from raw logits [R, T, V]."""
    guided = _guided(logits, scale) if plan.guided else logits
    if plan.sampling.greedy:
        return jax.nn.one_hot(jnp.argmax(guided, axis=-1), guided.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(filter_logits(guided, plan.sampling), axis=-1)


def _log(p: jax.Array) -> jax.Array:
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


def _gumbel_draw(keys: jax.Array, probs: jax.Array) -> jax.Array:
    """argmax(log p + Gumbel noise of each key): one exact sample per key."""
    noise = jax.vmap(jax.vmap(lambda k: jax.random.gumbel(k, probs.shape[-1:])))(keys)
    return jnp.argmax(_log(probs) + noise, axis=-1).astype(jnp.int32)


def _draw(keys: jax.Array, probs: jax.Array) -> jax.Array:
    """One sample per key from (unnormalised) probabilities [B, n, V]."""
    return jax.vmap(jax.vmap(lambda k, p: draw_tokens(k, _log(p)[None])[0]))(keys, probs)


def _residual(target: jax.Array, proposal: jax.Array) -> jax.Array:
    """max(0, p - q), or p itself where that is all zero (then q = p and nothing is rejected)."""
    rest = jnp.maximum(target - proposal, 0.0)
    return jnp.where(jnp.sum(rest, axis=-1, keepdims=True) > 0, rest, target)


def _take(probs: jax.Array, tokens: jax.Array) -> jax.Array:
    return jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]


def _redraft(state: SpeculativeState, old_count, new_count, old_drafts, old_proposals, target, plan):
    """Drafts and proposals for code indices ``new_count ..``: each proposal is this
    iteration's target there (the last one past the window), each draft coupled to the
    previous draft at the same code index."""
    window = plan.window
    j = jnp.arange(window - 1)
    codes = new_count[:, None] + j  # [B, L - 1]
    source = jnp.minimum(codes - old_count[:, None], window - 1)  # window output behind each
    if plan.sampling.greedy:  # every coupling of one-hot proposals drafts their arg-max
        return jnp.take_along_axis(jnp.argmax(target, axis=-1).astype(jnp.int32), source, axis=1), old_proposals
    proposals = jnp.take_along_axis(target, source[..., None], axis=1)
    if plan.coupling == "gumbel":
        return _gumbel_draw(_keys(state, codes, _GUMBEL), proposals), proposals
    old_slot = codes - old_count[:, None]  # where the old draft of this code index sat
    had = old_slot <= window - 2
    slot = jnp.clip(old_slot, 0, window - 2)
    old = jnp.take_along_axis(old_drafts, slot, axis=1)
    old_q = jnp.take_along_axis(old_proposals, slot[..., None], axis=1)
    keep_u = jax.vmap(jax.vmap(jax.random.uniform))(_keys(state, codes, _KEEP, state.iteration))
    keep = had & (keep_u * _take(old_q, old) < _take(proposals, old))
    fresh = _draw(_keys(state, codes, _REDRAW, state.iteration),
                  jnp.where(had[..., None], _residual(proposals, old_q), proposals))
    return jnp.where(keep, old, fresh), proposals


def _from_library(library, codes, count, drafts, proposals, plan):
    """Drafts (and one-hot proposals) for code indices ``count ..`` copied from the library
    row that agrees longest with each image's last committed codes; the Jacobi ``drafts``
    and ``proposals`` where no row agrees with the last committed code."""
    if library.shape[0] == 0:
        return drafts, proposals
    steps = library.shape[1]
    index = jnp.arange(steps)

    def best_row(image_codes, n):
        agree = (library == image_codes[:steps]) | (index >= n)  # only committed codes count
        last_disagreement = jnp.max(jnp.where(agree, -1, index), axis=1)
        run = n - 1 - last_disagreement  # codes agreeing up to the last committed one
        row = jnp.argmax(run)
        return library[row], run[row] > 0

    rows, found = jax.vmap(best_row)(codes, count)
    ahead = jnp.minimum(count[:, None] + jnp.arange(plan.window - 1), steps - 1)
    copied = jnp.take_along_axis(rows, ahead, axis=1)
    drafts = jnp.where(found[:, None], copied, drafts)
    if not plan.sampling.greedy:
        one_hot = jax.nn.one_hot(copied, proposals.shape[-1], dtype=proposals.dtype)
        proposals = jnp.where(found[:, None, None], one_hot, proposals)
    return drafts, proposals


def _write(buffer: jax.Array, block: jax.Array, start: jax.Array) -> jax.Array:
    """``block`` [B, T, ...] written into ``buffer`` [B, S, ...] from each row's ``start``."""
    return jax.vmap(lambda b, x, s: jax.lax.dynamic_update_slice_in_dim(b, x, s, axis=0))(buffer, block, start)


def _verify(state: SpeculativeState, target: jax.Array, plan: SpeculativePlan):
    """(codes to commit [B, L], how many) from this iteration's targets [B, L, V]."""
    window, n = plan.window, state.count
    if plan.sampling.greedy:
        # p and q one-hot: a draft is accepted iff it is the arg-max, and the residual at
        # the first rejection (or the bonus) is the arg-max there, so no randomness is drawn.
        best = jnp.argmax(target, axis=-1).astype(jnp.int32)
        return best, jnp.sum(jnp.cumprod(state.drafts == best[:, :-1], axis=1), axis=1) + 1
    codes = n[:, None] + jnp.arange(window)
    drafted = target[:, : window - 1]
    ratio_u = jax.vmap(jax.vmap(jax.random.uniform))(_keys(state, codes[:, :-1], _ACCEPT))
    accepted = ratio_u * _take(state.proposals, state.drafts) < _take(drafted, state.drafts)
    k = jnp.sum(jnp.cumprod(accepted, axis=1), axis=1)  # leading accepted drafts
    at_k = lambda a: jnp.take_along_axis(a, jnp.minimum(k, window - 2)[:, None, None], axis=1)  # noqa: E731
    residual = _residual(at_k(drafted), at_k(state.proposals))
    rejected_with = _draw(_keys(state, (n + k)[:, None], _RESIDUAL), residual)[:, 0]
    last = target[:, -1:]
    if plan.coupling == "gumbel":
        bonus = _gumbel_draw(_keys(state, codes[:, -1:], _GUMBEL), last)[:, 0]
    else:
        bonus = _draw(_keys(state, codes[:, -1:], _BONUS), last)[:, 0]
    new = jnp.where(k == window - 1, bonus, rejected_with)
    block = jnp.concatenate([state.drafts, jnp.zeros_like(new)[:, None]], axis=1)
    block = jnp.where(jnp.arange(window) == k[:, None], new[:, None], block)
    return block, k + 1


def _iterate(model: Transformer, weights: LoopWeights, state: SpeculativeState, plan: SpeculativePlan):
    window, n = plan.window, state.count
    active = n < plan.num_steps
    last = jnp.take_along_axis(state.codes, (n - 1)[:, None], axis=1)
    tokens = jnp.concatenate([last, state.drafts], axis=1) + plan.vocab_start  # [B, L]
    rows = 2 if plan.guided else 1
    tile = lambda a: jnp.concatenate([a] * rows, axis=0)  # noqa: E731
    positions = state.first_position[:, None] + tile(n - 1)[:, None] + jnp.arange(window)
    cache = dataclasses.replace(state.cache, index=tile(plan.width + n - 1))
    hidden, cache = model.hidden_states(tile(tokens), positions, jnp.ones_like(positions), cache, weights.layers)
    raw = model.project(hidden, plan.vocab_start, plan.vocab_end, weights.head)  # [R, L, V]
    target = _target(raw, state.guidance_scale, plan)
    block, committed = _verify(state, target, plan)
    committed = jnp.where(active, jnp.minimum(committed, plan.num_steps - n), 0)
    count = n + committed
    codes = _write(state.codes, block, jnp.where(active, n, plan.num_steps))
    drafts, proposals = _redraft(state, n, count, state.drafts, state.proposals, target, plan)
    drafts, proposals = _from_library(state.library, codes, count, drafts, proposals, plan)
    keep_old = lambda new, old: jnp.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)  # noqa: E731
    logits = state.logits
    if plan.keep_logits:
        logits = _write(logits, raw, tile(jnp.where(active, n, plan.num_steps)))
    return dataclasses.replace(
        state,
        cache=cache,
        codes=codes,
        count=count,
        drafts=keep_old(drafts, state.drafts),
        proposals=keep_old(proposals, state.proposals),
        forwards=state.forwards + active,
        commits=state.commits.at[committed].add(active.astype(jnp.int32)),
        iteration=state.iteration + 1,
        logits=logits,
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "plan"))
def _prefill(graphdef, params, tokens, segment_ids, positions, image_ids, key, guidance_scale, library, *,
             plan: SpeculativePlan) -> SpeculativeState:
    """The prompt's forward pass, code 0 drawn from it and the first window's drafts."""
    model = nnx.merge(graphdef, params)
    rows = tokens.shape[0]
    images = rows // 2 if plan.guided else rows
    cache = KVCache.init(model.config, rows, plan.cache_len)
    hidden, cache = model.hidden_states(tokens, positions, segment_ids, cache)
    cache = dataclasses.replace(cache, index=jnp.full((rows,), cache.index))  # rows advance on their own
    raw = model.project(hidden[:, -1:], plan.vocab_start, plan.vocab_end)  # [R, 1, V]
    vocab = raw.shape[-1]
    state = SpeculativeState(
        cache=cache,
        codes=jnp.zeros((images, plan.num_steps + plan.window), jnp.int32),
        count=jnp.zeros((images,), jnp.int32),
        drafts=jnp.zeros((images, plan.window - 1), jnp.int32),
        proposals=jnp.zeros((images, plan.window - 1, vocab), jnp.float32),
        first_position=positions[:, -1] + 1,
        image_ids=image_ids[:images],
        forwards=jnp.ones((images,), jnp.int32),
        commits=jnp.zeros((plan.window + 1,), jnp.int32).at[1].add(images),
        iteration=jnp.zeros((), jnp.int32),
        key=key,
        guidance_scale=jnp.asarray(guidance_scale, jnp.float32),
        library=library,
        logits=jnp.zeros((rows, plan.num_steps + plan.window, vocab), jnp.float32) if plan.keep_logits else None,
    )
    target = jnp.broadcast_to(_target(raw, state.guidance_scale, plan), (images, plan.window, vocab))
    zero = jnp.zeros((images,), jnp.int32)
    if plan.coupling == "gumbel":
        first = _gumbel_draw(_keys(state, zero[:, None], _GUMBEL), target[:, :1])[:, 0]
    else:
        first = _draw(_keys(state, zero[:, None], _BONUS), target[:, :1])[:, 0]
    # No previous drafts: an old count a window back leaves none to couple to.
    drafts, proposals = _redraft(state, zero + 1 - plan.window, zero + 1, state.drafts, state.proposals, target, plan)
    codes = state.codes.at[:, 0].set(first)
    drafts, proposals = _from_library(library, codes, zero + 1, drafts, proposals, plan)
    logits = state.logits
    if plan.keep_logits:
        logits = logits.at[:, 0].set(raw[:, 0])
    return dataclasses.replace(state, codes=codes, count=zero + 1, drafts=drafts,
                               proposals=proposals, logits=logits, iteration=state.iteration + 1)


@functools.partial(jax.jit, static_argnames=("graphdef", "plan"), donate_argnames=("state",))
def _decode(graphdef, params, weights: LoopWeights, state: SpeculativeState, until, *,
            plan: SpeculativePlan) -> SpeculativeState:
    """Iterates until every image has ``until`` codes (or all of them)."""
    model = nnx.merge(graphdef, params)
    target = jnp.minimum(until, plan.num_steps)
    return jax.lax.while_loop(lambda s: jnp.any(s.count < target),
                              lambda s: _iterate(model, weights, s, plan), state)


def generate_speculative(
    model: Transformer,
    prompts: list[list[int]],
    num_steps: int,
    *,
    window: int,
    sampling: SamplingParams,
    seed: int = 0,
    vocab_range: tuple[int, int],
    guidance_scale: float | None = None,
    coupling: str = "gumbel",
    image_ids: np.ndarray | None = None,
    library: np.ndarray | None = None,
    keep_logits: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    progress: str | None = None,
    chunk: int = 64,
) -> SpeculativeResult:
    """``num_steps`` codes after each prompt (token-id lists; with ``guidance_scale``, the
    conditional rows then as many unconditional ones) by speculative Jacobi decoding
    with windows of ``window`` tokens. ``image_ids`` (default 0, 1, ...) key each image's
    randomness; ``vocab_range`` [start, end) is the sampled vocabulary slice. ``library``
    [M, num_steps]: codes of known images (vocabulary-slice indices) to draft from."""
    if window < 2:
        raise ValueError(f"the speculative window must be >= 2 tokens (0 decodes token by token), got {window}")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling {coupling!r}; expected one of {COUPLINGS}")
    guided = guidance_scale is not None
    if guided and len(prompts) % 2:
        raise ValueError(f"guided generation needs conditional and unconditional rows in pairs, got {len(prompts)}")
    config = model.config
    start, end = vocab_range
    if not 0 <= start < end <= config.vocab_size:
        raise ValueError(f"vocab_range [{start}, {end}) is outside the vocabulary [0, {config.vocab_size})")
    images = len(prompts) // 2 if guided else len(prompts)
    library = np.zeros((0, num_steps), np.int32) if library is None else np.asarray(library, np.int32)
    if library.ndim != 2 or library.shape[1] != num_steps:
        raise ValueError(f"the draft library holds {library.shape} codes; expected [images, {num_steps}]")
    if library.size and not 0 <= library.min() <= library.max() < end - start:
        raise ValueError(f"the draft library has codes outside [0, {end - start})")
    longest = max(len(p) for p in prompts)
    width, _ = plan_lengths(config.max_position_embeddings, longest, num_steps, None)
    cache_len = -(-(width + num_steps + window) // CACHE_BUCKET) * CACHE_BUCKET
    plan = SpeculativePlan(
        window=window, coupling=coupling, num_steps=num_steps, width=width, cache_len=cache_len,
        vocab_start=start, vocab_end=end, sampling=sampling, guided=guided, keep_logits=keep_logits,
        slice_weights_once=_slice_weights_once(model),
    )
    batch = left_pad(prompts, config.special_tokens.pad, width)
    ids = np.arange(images) if image_ids is None else np.asarray(image_ids)
    placement = BatchPlacement(mesh, len(prompts), guided=guided)
    graphdef, params = nnx.split(model)
    params = placement.params(params)
    inputs = [placement.rows(a) for a in (batch.tokens, batch.segment_ids, batch.positions)]
    row_ids = placement.rows(np.concatenate([ids] * (2 if guided else 1)).astype(np.int32))
    scale = 1.0 if guidance_scale is None else guidance_scale
    with tqdm(total=num_steps, desc=progress, unit="code", disable=progress is None) as bar, placement.context():
        state = _prefill(graphdef, params, *inputs, row_ids, jax.random.key(seed), scale, library, plan=plan)
        weights = _loop_weights(graphdef, params, plan=plan)
        done = 1
        bar.update(1)
        while done < num_steps:
            until = num_steps if progress is None else done + chunk
            state = _decode(graphdef, params, weights, state, until, plan=plan)
            reached = int(jnp.min(state.count))
            bar.update(reached - done)
            done = reached
    keep = placement.keep[:images]
    tokens = np.asarray(jax.device_get(state.codes))[keep, :num_steps] + start
    logits = None
    if keep_logits:
        logits = placement.take(np.asarray(jax.device_get(state.logits)))[:, :num_steps]
    return SpeculativeResult(tokens=tokens, forwards=np.asarray(jax.device_get(state.forwards))[keep],
                             commits=np.asarray(jax.device_get(state.commits)), logits=logits)
