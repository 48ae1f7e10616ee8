"""The VQGAN train state and the pure functions that update it (jitted once by the trainer).

The state is a dict of pytrees: ``params`` (the VQGAN and the PatchGAN discriminator),
``opt_state``, ``stats`` (the code-usage EMA and, with ``codebook.ema``, the codebook's
running counts and sums) and ``step``. Every function takes the run's ``Spec`` first
(bound before ``jax.jit``) and returns new values instead of changing anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from liquid_jax.model.vqgan import VQGAN
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.tokenizer.image import to_model_input
from liquid_jax.train.vqgan import codebook, losses
from liquid_jax.train.vqgan.patchgan import PatchGAN
from liquid_jax.train.vqgan.perceptual import perceptual_distance

State = dict[str, Any]


class Modules(nnx.Module):
    """Everything the state holds, as one module: VQGAN, discriminator, code statistics."""

    def __init__(self, config: ml_collections.ConfigDict, cfg: VQGANConfig, rngs: nnx.Rngs):
        self.model = VQGAN(cfg, rngs=rngs)
        self.disc = PatchGAN(cfg, ndf=config.loss.disc_ndf, n_layers=config.loss.disc_layers, rngs=rngs) \
            if config.loss.disc_weight > 0 else None
        self.usage = nnx.BatchStat(jnp.full((cfg.num_image_codes,), 1.0 / cfg.num_image_codes, jnp.float32))
        if config.codebook.ema:
            self.ema_count = nnx.BatchStat(jnp.zeros((cfg.num_image_codes,), jnp.float32))
            self.ema_total = nnx.BatchStat(jnp.zeros((cfg.num_image_codes, cfg.embed_dim), jnp.float32))


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the step functions need besides the state: module graph, optimizer, settings."""

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    num_image_codes: int
    beta: float
    l1_weight: float
    l2_weight: float
    codebook_weight: float  # 0 with an EMA codebook
    perceptual_weight: float
    disc_weight: float
    disc_start: int
    usage_decay: float
    ema_decay: float | None  # None: the codebook learns by gradient
    dead_fraction: float
    seed: int


def _adam(config: ml_collections.ConfigDict, lr: float) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(1, config.warmup_steps), max(config.steps, config.warmup_steps + 1), lr * config.final_lr_fraction
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2),
    )


def make_optimizer(config: ml_collections.ConfigDict, params: dict[str, Any]) -> optax.GradientTransformation:
    """Clipped Adam with warm-up and cosine decay; the discriminator at ``loss.disc_lr``."""
    return optax.multi_transform(
        {"vq": _adam(config, config.lr), "disc": _adam(config, config.loss.disc_lr)},
        jax.tree_util.tree_map_with_path(lambda p, _: "disc" if p[0].key == "disc" else "vq", params),
    )


def init_state(config: ml_collections.ConfigDict) -> tuple[Spec, State]:
    """The run's Spec and its freshly initialised state (seeded by ``config.seed``) on the
    default device."""
    cfg = VQGANConfig.from_dict({**config.model.to_dict(), "resolution": config.data.image_size})
    graphdef, params, stats = nnx.split(Modules(config, cfg, nnx.Rngs(config.seed)), nnx.Param, nnx.BatchStat)
    params = nnx.to_pure_dict(params)
    tx = make_optimizer(config, params)
    state = {"params": params, "opt_state": tx.init(params), "stats": nnx.to_pure_dict(stats),
             "step": jnp.zeros((), jnp.int32)}
    loss = config.loss
    spec = Spec(
        graphdef=graphdef, tx=tx, num_image_codes=cfg.num_image_codes, beta=cfg.beta,
        l1_weight=loss.l1_weight, l2_weight=loss.l2_weight,
        codebook_weight=0.0 if config.codebook.ema else loss.codebook_weight,
        perceptual_weight=loss.perceptual_weight, disc_weight=loss.disc_weight, disc_start=loss.disc_start,
        usage_decay=config.codebook.usage_decay, ema_decay=config.codebook.ema_decay if config.codebook.ema else None,
        dead_fraction=config.codebook.dead_fraction, seed=config.seed,
    )
    return spec, state


def checkpointed(state: State) -> State:
    """What a checkpoint holds of ``state``: all but ``step``, which is the checkpoint's number."""
    return {k: state[k] for k in ("params", "opt_state", "stats")}


def modules(spec: Spec, state: State) -> Modules:
    """The state's arrays as modules (``.model`` is the VQGAN)."""
    return nnx.merge(spec.graphdef, state["params"], state["stats"])


def _generator_loss(params, spec: Spec, stats, x, disc_on, perceptual):
    m = nnx.merge(spec.graphdef, params, stats)
    z = m.model.encode_latents(x)
    codes = m.model.quantize.codes(jax.lax.stop_gradient(z))
    zq = m.model.quantize.lookup(codes)
    x_rec = m.model.decode_latents(losses.straight_through(z, zq))
    rec = losses.reconstruction_loss(x, x_rec, spec.l1_weight, spec.l2_weight)
    codebook_loss, commit = losses.quantization_losses(z, zq)
    total = rec + spec.codebook_weight * codebook_loss + spec.beta * commit
    aux = {"rec": rec, "codebook": codebook_loss, "commit": commit}
    if perceptual is not None:
        perc = perceptual_distance(perceptual, x, x_rec).mean()
        total = total + spec.perceptual_weight * perc
        aux["perceptual"] = perc
    if m.disc is not None:
        g = losses.generator_adversarial_loss(m.disc(x_rec))
        total = total + jnp.where(disc_on, spec.disc_weight, 0.0) * g
        aux["g_adv"] = g
    aux["loss"] = total
    return total, (aux, z, codes, x_rec)


def _disc_loss(params, spec: Spec, stats, x, x_rec):
    m = nnx.merge(spec.graphdef, params, stats)
    return losses.hinge_discriminator_loss(m.disc(x), m.disc(jax.lax.stop_gradient(x_rec)))


def train_step(spec: Spec, state: State, pixels: jax.Array, perceptual: Any) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step of the VQGAN (and, from ``disc_start``, the discriminator) on
    uint8 ``pixels``; ``perceptual`` is the VGG16 weights or None. Returns (state, metrics)."""
    x = to_model_input(pixels)
    step = state["step"]
    disc_on = step >= spec.disc_start
    grads, (aux, z, codes, x_rec) = jax.grad(_generator_loss, has_aux=True)(
        state["params"], spec, state["stats"], x, disc_on, perceptual)
    if spec.disc_weight > 0:
        d_loss, d_grads = jax.value_and_grad(_disc_loss)(state["params"], spec, state["stats"], x, x_rec)
        d_grads = jax.tree.map(lambda g: g * disc_on, d_grads)
        grads = {**grads, "disc": d_grads["disc"]}
        aux["d_loss"] = d_loss
    updates, opt_state = spec.tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    counts = losses.code_histogram(codes, spec.num_image_codes)
    decay = spec.usage_decay
    usage = decay * state["stats"]["usage"] + (1 - decay) * counts / counts.sum()
    aux["psnr"] = losses.psnr(x, x_rec).mean()
    aux["perplexity"] = losses.perplexity(counts)
    aux["batch_codes_used"] = jnp.mean(counts > 0)
    stats = {**state["stats"], "usage": usage}
    if spec.ema_decay is not None:
        stats["ema_count"], stats["ema_total"], emb = codebook.ema_update(
            stats["ema_count"], stats["ema_total"], z, codes, spec.ema_decay)
        params = _with_embedding(params, emb)
    return {"params": params, "stats": stats, "opt_state": opt_state, "step": step + 1}, aux


def restart_dead_codes(spec: Spec, state: State, pixels: jax.Array) -> tuple[State, jax.Array]:
    """Re-initialises rarely used codes from the latents of ``pixels`` (``codebook.restart_dead``,
    keyed by the seed and the step). Returns (state, number of codes restarted)."""
    m = modules(spec, state)
    z = m.model.encode_latents(to_model_input(pixels))
    stats = dict(state["stats"])
    key = jax.random.fold_in(jax.random.key(spec.seed), state["step"])
    emb, dead = codebook.restart_dead(state["params"]["model"]["quantize"]["embedding"], stats["usage"], z,
                                      spec.dead_fraction / spec.num_image_codes, key)
    stats["usage"] = jnp.where(dead, 1.0 / spec.num_image_codes, stats["usage"])
    if spec.ema_decay is not None:
        # A restarted code starts as if it had been assigned once to its new vector.
        stats["ema_count"] = jnp.where(dead, 1.0, stats["ema_count"])
        stats["ema_total"] = jnp.where(dead[:, None], emb, stats["ema_total"])
    return {**state, "params": _with_embedding(state["params"], emb), "stats": stats}, dead.sum()


def evaluate_batch(spec: Spec, state: State, pixels: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(per-image PSNR, codes, reconstructions in [-1, 1]) of encode -> decode."""
    m = modules(spec, state)
    x = to_model_input(pixels)
    codes = m.model.encode(x)
    x_rec = m.model.decode(codes)
    return losses.psnr(x, x_rec), codes, x_rec


def _with_embedding(params: dict[str, Any], embedding: jax.Array) -> dict[str, Any]:
    """A copy of the pure params dict with a new codebook."""
    model = params["model"]
    return {**params, "model": {**model, "quantize": {**model["quantize"], "embedding": embedding}}}
