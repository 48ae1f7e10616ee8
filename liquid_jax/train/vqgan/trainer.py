"""`liquid-jax train-vqgan --config=configs/vqgan_tiny.py --workdir=DIR`: train a VQGAN.

Losses: L1 + L2 reconstruction, codebook + beta * commitment (with ``codebook.ema`` the
codebook follows an exponential moving average of its assigned latents instead of the
codebook loss), optional LPIPS-style
perceptual loss (``loss.perceptual_weights``: a VGG16 safetensors file), optional
PatchGAN hinge loss after ``loss.disc_start`` steps. Dead codes (usage EMA below
``codebook.dead_fraction / num_image_codes``) are re-initialised from encoder outputs every
``codebook.restart_every`` steps.

The loop has the LM trainer's shape and parts: one process per host over a global mesh,
checkpoints in ``workdir/checkpoints`` (``TrainCheckpointer``; any path, ``gs://``
included) that resume exactly, SIGTERM saves and stops, metrics to
``workdir/metrics.jsonl`` and TensorBoard (``MetricsWriter``) and reconstructions to
``workdir/reconstructions_{step}.png``, both from process 0; the final model goes to
``workdir/vqgan`` (load it with ``liquid_jax.load_vqgan``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL.Image
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from liquid_jax import paths
from liquid_jax.checkpoint import train_state
from liquid_jax.checkpoint.vqgan import WORKDIR_MODEL, save_vqgan
from liquid_jax.sharding import logical_to_spec, make_mesh
from liquid_jax.tokenizer.image import to_uint8
from liquid_jax.train import metrics
from liquid_jax.train.preemption import Preemption
from liquid_jax.train.vqgan import data, losses
from liquid_jax.train.vqgan import step as step_lib
from liquid_jax.train.vqgan.perceptual import load_vgg16_weights


def train(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> dict[str, float]:
    """Runs (or resumes) training; returns the final held-out metrics, or
    ``{"preempted_at_step": step}`` when SIGTERM stopped it after saving that step. SIGTERM
    before the first step ends the process (exit code 143; nothing to save)."""
    with Preemption() as preemption:
        return _train(config, paths.resolve(workdir), preemption)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, preemption: Preemption) -> dict[str, float]:
    mesh = make_mesh(tuple(config.mesh_shape))
    rows = NamedSharding(mesh, PartitionSpec(logical_to_spec(("batch",), mesh=mesh)[0]))
    replicated = NamedSharding(mesh, PartitionSpec())
    batches, held_out = data.datasets(config)

    spec, state = step_lib.init_state(config)
    state = data.on_mesh(state, replicated)
    perceptual = _perceptual_weights(config, replicated)
    jit = functools.partial(jax.jit, out_shardings=replicated)
    train_step = jit(functools.partial(step_lib.train_step, spec), donate_argnums=0)
    restart_dead_codes = jit(functools.partial(step_lib.restart_dead_codes, spec), donate_argnums=0)
    evaluate = functools.partial(_evaluate, jit(functools.partial(step_lib.evaluate_batch, spec)),
                                 held_out=held_out, batch_size=config.batch_size, sharding=rows,
                                 num_image_codes=spec.num_image_codes)

    run_config = train_state.config_json(config)
    checkpointer = train_state.TrainCheckpointer(workdir, save_every=config.checkpoint_every,
                                                   keep=config.keep_checkpoints)
    with contextlib.closing(checkpointer), contextlib.closing(metrics.MetricsWriter(workdir)) as writer:
        start = 0
        if checkpointer.latest_step() is not None:
            start, saved = checkpointer.restore(step_lib.checkpointed(state), None, run_config["model"])
            state = {**saved, "step": data.on_mesh(np.int32(start), replicated)}
            logging.info("resumed from %s at step %d", checkpointer.directory, start)

        tic, images_since = time.perf_counter(), 0
        for step in tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train-vqgan",
                         disable=jax.process_index() != 0):
            pixels = batches.on_mesh(step, rows)
            state, aux = train_step(state, pixels, perceptual)
            preemption.arm()  # a step is under way: from now on SIGTERM saves it
            images_since += config.batch_size
            done = step + 1
            every = config.codebook.restart_every
            if every and done % every == 0 and done <= config.codebook.restart_until * config.steps:
                state, n_dead = restart_dead_codes(state, pixels)
                writer.write(done, {"restarted_codes": int(n_dead)})
            if done % config.log_every == 0 or done == config.steps:
                values = {k: float(v) for k, v in aux.items()}
                values["images_per_second"] = images_since / (time.perf_counter() - tic)
                usage = np.asarray(state["stats"]["usage"])
                values["codes_in_use_ema"] = float(np.mean(usage > 0.1 / spec.num_image_codes))
                writer.write(done, values)
                tic, images_since = time.perf_counter(), 0
            if done % config.eval_every == 0 or done == config.steps:
                values, recs = evaluate(state)
                writer.write(done, values)
                if jax.process_index() == 0:
                    save_grid(workdir / f"reconstructions_{done:07d}.png", held_out[:8], to_uint8(recs[:8]))
            preempted = preemption.should_stop(done)
            if preempted or done % config.checkpoint_every == 0 or done == config.steps:
                checkpointer.save(done, step_lib.checkpointed(state), None, run_config, force=True)
            if preempted:
                logging.warning("preempted: saved step %d, stopping", done)
                return {"preempted_at_step": done}

    final, _ = evaluate(state)
    save_vqgan(workdir / WORKDIR_MODEL, step_lib.modules(spec, state).model,
               {"train": {"steps": config.steps, **final}}, overwrite=True)
    return final


def _perceptual_weights(config: ml_collections.ConfigDict, sharding: NamedSharding) -> dict[str, jax.Array] | None:
    if config.loss.perceptual_weight <= 0:
        return None
    if not config.loss.perceptual_weights:
        raise ValueError("loss.perceptual_weight > 0 needs loss.perceptual_weights (a VGG16 safetensors file)")
    return data.on_mesh(load_vgg16_weights(config.loss.perceptual_weights), sharding)


def _evaluate(evaluate_batch: Callable, state: step_lib.State, *, held_out: np.ndarray, batch_size: int,
              sharding: NamedSharding, num_image_codes: int) -> tuple[dict[str, float], np.ndarray]:
    """Held-out PSNR, codebook use and perplexity, and the reconstructions (in [-1, 1])."""
    psnrs, counts, recs = [], np.zeros(num_image_codes), []
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start:start + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]) if pad else chunk
        p, codes, x_rec = evaluate_batch(state, data.on_mesh(padded, sharding))
        keep = len(chunk)
        psnrs.append(np.asarray(p)[:keep])
        counts += np.bincount(np.asarray(codes)[:keep].reshape(-1), minlength=num_image_codes)
        recs.append(np.asarray(x_rec)[:keep])
    values = {
        "eval_psnr": float(np.concatenate(psnrs).mean()),
        "eval_codes_used": float((counts > 0).mean()),
        "eval_perplexity": float(losses.perplexity(jnp.asarray(counts, jnp.float32))),
    }
    return values, np.concatenate(recs)


def save_grid(path: epath.Path, originals: np.ndarray, reconstructions: np.ndarray) -> None:
    """PNG with originals on the top row and their reconstructions below."""
    top = np.concatenate(list(originals), axis=1)
    bottom = np.concatenate(list(reconstructions), axis=1)
    with path.open("wb") as f:
        PIL.Image.fromarray(np.concatenate([top, bottom], axis=0)).save(f, format="PNG")
