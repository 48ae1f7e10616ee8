"""`liquid-jax train-vqgan --config=configs/vqgan_tiny.py --workdir=DIR`: train a VQGAN.

Losses: L1 + L2 reconstruction, codebook + beta * commitment (with ``codebook.ema`` the
codebook follows an exponential moving average of its assigned latents instead of the
codebook loss), optional LPIPS-style
perceptual loss (``loss.perceptual_weights``: a VGG16 safetensors file), optional
PatchGAN hinge loss after ``loss.disc_start`` steps. Dead codes (usage EMA below
``codebook.dead_fraction / n_embed``) are re-initialised from encoder outputs every
``codebook.restart_every`` steps. Orbax checkpoints in ``workdir/checkpoints`` resume
exactly; metrics go to ``workdir/metrics.jsonl`` and TensorBoard; reconstructions to
``workdir/reconstructions_{step}.png``; the final model to ``workdir/vqgan`` (load it with
``liquid_jax.load_vqgan``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import PIL.Image
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from liquid_jax.codec import WORKDIR_MODEL, save_vqgan
from liquid_jax.model.vqgan import VQGAN
from liquid_jax.model.vqgan_config import VQGANConfig
from liquid_jax.sharding import logical_to_spec, make_mesh
from liquid_jax.tokenizer.image import to_uint8
from liquid_jax.train import codebook
from liquid_jax.train import vqgan_losses as losses
from liquid_jax.train.patchgan import PatchGAN
from liquid_jax.train.perceptual import load_vgg16_weights, perceptual_distance
from liquid_jax.train.vqgan_data import ImageBatches, folder_images, load_folder, shape_images


def _to_model_input(pixels: jax.Array) -> jax.Array:
    return pixels.astype(jnp.float32) / 255.0 * 2.0 - 1.0


def _datasets(config: ml_collections.ConfigDict) -> tuple[ImageBatches, np.ndarray]:
    d = config.data
    if d.source == "shapes":
        train = shape_images(d.num_train, d.image_size, seed=d.seed)
        held_out = shape_images(d.num_eval, d.image_size, seed=d.seed + 1_000_003)
    elif d.source == "folder":
        paths = folder_images(d.folder)
        if len(paths) <= d.num_eval:
            raise ValueError(f"{d.folder}: {len(paths)} images, need more than num_eval={d.num_eval}")
        train, held_out = paths[d.num_eval:], load_folder(paths[: d.num_eval], d.image_size)
    else:
        raise ValueError(f"data.source {d.source!r}: expected 'shapes' or 'folder'")
    return ImageBatches(train, config.batch_size, d.image_size, seed=d.seed), held_out


class _State(nnx.Module):
    """Everything a checkpoint holds, as one pytree-friendly module."""

    def __init__(self, config: ml_collections.ConfigDict, cfg: VQGANConfig, rngs: nnx.Rngs):
        self.model = VQGAN(cfg, rngs=rngs)
        self.disc = PatchGAN(cfg, ndf=config.loss.disc_ndf, n_layers=config.loss.disc_layers, rngs=rngs) \
            if config.loss.disc_weight > 0 else None
        self.usage = nnx.BatchStat(jnp.full((cfg.n_embed,), 1.0 / cfg.n_embed, jnp.float32))
        if config.codebook.ema:
            self.ema_count = nnx.BatchStat(jnp.zeros((cfg.n_embed,), jnp.float32))
            self.ema_total = nnx.BatchStat(jnp.zeros((cfg.n_embed, cfg.embed_dim), jnp.float32))


def _optimizer(config: ml_collections.ConfigDict, lr: float) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(1, config.warmup_steps), max(config.steps, config.warmup_steps + 1), lr * config.final_lr_fraction
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adam(schedule, b1=config.adam_b1, b2=config.adam_b2),
    )


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Runs (or resumes) training; returns the final held-out metrics."""
    os.makedirs(workdir, exist_ok=True)
    cfg = VQGANConfig.from_dict({**config.model.to_dict(), "resolution": config.data.image_size})
    mesh = make_mesh(tuple(config.mesh_shape))
    batch_sharding = NamedSharding(mesh, PartitionSpec(logical_to_spec(("batch",), mesh=mesh)[0]))
    replicated = NamedSharding(mesh, PartitionSpec())
    batches, held_out = _datasets(config)

    state_module = _State(config, cfg, nnx.Rngs(config.seed))
    graphdef, params, stats = nnx.split(state_module, nnx.Param, nnx.BatchStat)
    tx = optax.multi_transform(
        {"vq": _optimizer(config, config.lr), "disc": _optimizer(config, config.loss.disc_lr)},
        jax.tree_util.tree_map_with_path(lambda p, _: "disc" if p[0].key == "disc" else "vq", nnx.to_pure_dict(params)),
    )
    pure = nnx.to_pure_dict
    train_state = {"params": pure(params), "stats": pure(stats), "step": jnp.zeros((), jnp.int32)}
    train_state["opt"] = tx.init(train_state["params"])
    train_state = jax.device_put(train_state, replicated)

    perc_weights = None
    if config.loss.perceptual_weight > 0:
        if not config.loss.perceptual_weights:
            raise ValueError("loss.perceptual_weight > 0 needs loss.perceptual_weights (a VGG16 safetensors file)")
        perc_weights = jax.device_put(load_vgg16_weights(config.loss.perceptual_weights), replicated)

    def merged(p, s):
        return nnx.merge(graphdef, _as_state(params, p), _as_state(stats, s))

    def vq_forward(p, s, x):
        m = merged(p, s)
        z = m.model.encode_latents(x)
        codes = m.model.quantize.codes(jax.lax.stop_gradient(z))
        zq = m.model.quantize.lookup(codes)
        x_rec = m.model.decode_latents(losses.straight_through(z, zq))
        return m, z, zq, codes, x_rec

    loss_cfg = config.loss
    codebook_weight = 0.0 if config.codebook.ema else loss_cfg.codebook_weight

    def generator_loss(p, s, x, step, disc_on):
        m, z, zq, codes, x_rec = vq_forward(p, s, x)
        rec = losses.reconstruction_loss(x, x_rec, loss_cfg.l1_weight, loss_cfg.l2_weight)
        codebook_loss, commit = losses.quantization_losses(z, zq)
        total = rec + codebook_weight * codebook_loss + cfg.beta * commit
        aux = {"rec": rec, "codebook": codebook_loss, "commit": commit}
        if perc_weights is not None:
            perc = perceptual_distance(perc_weights, x, x_rec).mean()
            total = total + loss_cfg.perceptual_weight * perc
            aux["perceptual"] = perc
        if m.disc is not None:
            g = losses.generator_adversarial_loss(m.disc(x_rec))
            total = total + jnp.where(disc_on, loss_cfg.disc_weight, 0.0) * g
            aux["g_adv"] = g
        aux["loss"] = total
        return total, (aux, z, codes, x_rec)

    def disc_loss(p, s, x, x_rec):
        m = merged(p, s)
        return losses.hinge_discriminator_loss(m.disc(x), m.disc(jax.lax.stop_gradient(x_rec)))

    def train_step(state, pixels):
        x = _to_model_input(pixels)
        step = state["step"]
        disc_on = step >= loss_cfg.disc_start
        grads, (aux, z, codes, x_rec) = jax.grad(generator_loss, has_aux=True)(
            state["params"], state["stats"], x, step, disc_on)
        if state_module.disc is not None:
            d_loss, d_grads = jax.value_and_grad(disc_loss)(state["params"], state["stats"], x, x_rec)
            d_grads = jax.tree.map(lambda g: g * disc_on, d_grads)
            grads = {**grads, "disc": d_grads["disc"]}
            aux["d_loss"] = d_loss
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params_new = optax.apply_updates(state["params"], updates)
        counts = losses.code_histogram(codes, cfg.n_embed)
        decay = config.codebook.usage_decay
        usage = decay * state["stats"]["usage"] + (1 - decay) * counts / counts.sum()
        aux["psnr"] = losses.psnr(x, x_rec).mean()
        aux["perplexity"] = losses.perplexity(counts)
        aux["batch_codes_used"] = jnp.mean(counts > 0)
        stats = {**state["stats"], "usage": usage}
        if config.codebook.ema:
            stats["ema_count"], stats["ema_total"], emb = codebook.ema_update(
                stats["ema_count"], stats["ema_total"], z, codes, config.codebook.ema_decay)
            params_new = _with_embedding(params_new, emb)
        new = {"params": params_new, "stats": stats, "opt": opt, "step": step + 1}
        return new, aux

    def restart_dead_codes(state, pixels, key):
        m = merged(state["params"], state["stats"])
        z = m.model.encode_latents(_to_model_input(pixels))
        stats = dict(state["stats"])
        emb, dead = codebook.restart_dead(state["params"]["model"]["quantize"]["embedding"], stats["usage"], z,
                                          config.codebook.dead_fraction / cfg.n_embed, key)
        stats["usage"] = jnp.where(dead, 1.0 / cfg.n_embed, stats["usage"])
        if config.codebook.ema:
            # A restarted code starts as if it had been assigned once to its new vector.
            stats["ema_count"] = jnp.where(dead, 1.0, stats["ema_count"])
            stats["ema_total"] = jnp.where(dead[:, None], emb, stats["ema_total"])
        return {**state, "params": _with_embedding(state["params"], emb), "stats": stats}, dead.sum()

    def evaluate_batch(state, pixels):
        m = merged(state["params"], state["stats"])
        x = _to_model_input(pixels)
        codes = m.model.encode(x)
        x_rec = m.model.decode(codes)
        return losses.psnr(x, x_rec), codes, x_rec

    train_step = jax.jit(train_step, donate_argnums=0)
    restart_dead_codes = jax.jit(restart_dead_codes, donate_argnums=0)
    evaluate_batch = jax.jit(evaluate_batch)

    def evaluate(state) -> tuple[dict[str, float], np.ndarray]:
        psnrs, counts, recs = [], np.zeros(cfg.n_embed), []
        n = len(held_out)
        for start in range(0, n, config.batch_size):
            chunk = held_out[start:start + config.batch_size]
            pad = config.batch_size - len(chunk)
            padded = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]) if pad else chunk
            p, codes, x_rec = evaluate_batch(state, jax.device_put(padded, batch_sharding))
            keep = len(chunk)
            psnrs.append(np.asarray(p)[:keep])
            counts += np.bincount(np.asarray(codes)[:keep].reshape(-1), minlength=cfg.n_embed)
            recs.append(np.asarray(x_rec)[:keep])
        metrics = {
            "eval_psnr": float(np.concatenate(psnrs).mean()),
            "eval_codes_used": float((counts > 0).mean()),
            "eval_perplexity": float(losses.perplexity(jnp.asarray(counts, jnp.float32))),
        }
        return metrics, np.concatenate(recs)

    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True),
    )
    if manager.latest_step() is not None:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), train_state)
        train_state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    start = int(train_state["step"])

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    log = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def record(step: int, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)
        log.write(json.dumps({"step": step, **metrics}) + "\n")
        log.flush()

    key = jax.random.key(config.seed)
    tic, images_since = time.perf_counter(), 0
    aux = None
    for step in tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train-vqgan"):
        pixels = jax.device_put(batches[step], batch_sharding)
        train_state, aux = train_step(train_state, pixels)
        images_since += config.batch_size
        done = step + 1
        every = config.codebook.restart_every
        if every and done % every == 0 and done <= config.codebook.restart_until * config.steps:
            train_state, n_dead = restart_dead_codes(train_state, pixels, jax.random.fold_in(key, done))
            record(done, {"restarted_codes": int(n_dead)})
        if done % config.log_every == 0 or done == config.steps:
            metrics = {k: float(v) for k, v in aux.items()}
            metrics["images_per_second"] = images_since / (time.perf_counter() - tic)
            metrics["codes_in_use_ema"] = float(np.mean(np.asarray(train_state["stats"]["usage"]) > 0.1 / cfg.n_embed))
            record(done, metrics)
            tic, images_since = time.perf_counter(), 0
        if done % config.eval_every == 0 or done == config.steps:
            metrics, recs = evaluate(train_state)
            record(done, metrics)
            save_grid(os.path.join(workdir, f"reconstructions_{done:07d}.png"), held_out[:8], to_uint8(recs[:8]))
        if done % config.checkpoint_every == 0 or done == config.steps:
            manager.save(done, args=ocp.args.StandardSave(train_state))
    manager.wait_until_finished()
    manager.close()

    final, recs = evaluate(train_state)
    module = merged(train_state["params"], train_state["stats"])
    save_vqgan(os.path.join(workdir, WORKDIR_MODEL), module.model,
               {"train": {"steps": config.steps, **final}}, overwrite=True)
    writer.close()
    log.close()
    return final


def _with_embedding(params: dict[str, Any], embedding: jax.Array) -> dict[str, Any]:
    """A copy of the pure params dict with a new codebook."""
    model = params["model"]
    return {**params, "model": {**model, "quantize": {**model["quantize"], "embedding": embedding}}}


def _as_state(template: nnx.State, pure: dict[str, Any]) -> nnx.State:
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, pure)
    return state


def save_grid(path: str, originals: np.ndarray, reconstructions: np.ndarray) -> None:
    """PNG with originals on the top row and their reconstructions below."""
    top = np.concatenate(list(originals), axis=1)
    bottom = np.concatenate(list(reconstructions), axis=1)
    PIL.Image.fromarray(np.concatenate([top, bottom], axis=0)).save(path)
