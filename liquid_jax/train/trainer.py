"""The training loop: build or resume the state, step, log, checkpoint, stop cleanly.

One process per host; every process runs this same loop over the global mesh. The
loop dispatches step ``s + 1`` before reading the metrics of step ``s``, so the host
never waits on the device just to log.

A workdir is self-contained: the tokenizer's files are kept in ``<workdir>/tokenizer``
and every checkpoint holds the model card (architecture, special tokens, and the image
format learned from the data: VQGAN, grids, size prefix), so any step can be exported
or sampled (``liquid_jax.train.export``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from tqdm import tqdm

from liquid_jax import paths
from liquid_jax.checkpoint import train_state
from liquid_jax.checkpoint.card import make_card
from liquid_jax.data import pipeline
from liquid_jax.model.config import TransformerConfig
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer.text import load_text_tokenizer
from liquid_jax.train import flops, init_model
from liquid_jax.train import config as config_lib
from liquid_jax.train import metrics as metrics_lib
from liquid_jax.train import optimizer as optimizer_lib
from liquid_jax.train import preemption as preemption_lib
from liquid_jax.train import state as state_lib
from liquid_jax.train import train_step as step_lib


class NonFiniteLossError(RuntimeError):
    """A step produced a NaN/Inf loss or gradient and ``train.nan_policy`` is "stop"."""


@dataclasses.dataclass
class TrainResult:
    """What a finished (or preempted) run reports."""

    step: int
    preempted: bool
    skipped_steps: int
    last_metrics: dict[str, float]


def model_config(config: ml_collections.ConfigDict) -> TransformerConfig:
    return TransformerConfig.from_dict(config.model.to_dict())


def make_data(config: ml_collections.ConfigDict, model: TransformerConfig, mesh, tokenizer: str) -> pipeline.DataIterator:
    return pipeline.make_iterator(
        config.data, load_text_tokenizer(tokenizer), model.special_tokens, model.text_vocab_size, mesh=mesh
    )


def _initial_state(config, model, mesh, tx, checkpointer, data):
    """(start step, parts, params, opt_state, opt_shardings): restored from the newest
    intact checkpoint (the data iterator too), or freshly initialised."""
    if checkpointer.latest_step() is None:
        parts = init_model.initial_params(config, model, mesh)
        opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
        return 0, parts, parts.params, state_lib.init_opt_state(tx, parts.params, opt_shardings), opt_shardings
    parts = state_lib.abstract_parts(model, mesh)
    opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
    abstract_opt = state_lib.abstract_opt_state(tx, parts.params, opt_shardings)
    step, state = checkpointer.restore({"params": parts.params, "opt_state": abstract_opt}, data, model.to_dict())
    logging.info("resumed from %s at step %d", checkpointer.directory, step)
    return step, parts, state["params"], state["opt_state"], opt_shardings


def _host_metrics(device_metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(device_metrics).items()}


def _data_metrics(data: Any) -> dict[str, float]:
    """The data pipeline's counters (skips by reason, per source, tokens) as metrics."""
    counters = getattr(data, "counters", None)
    return {} if counters is None else {f"data/{k}": float(v) for k, v in counters.items()}


def train(config: ml_collections.ConfigDict, workdir: str | epath.PathLike, data: Any = None) -> TrainResult:
    """Runs (or resumes) the training described by ``config`` in ``workdir``.

    ``data`` replaces the configured pipeline: any iterator of global batches with
    JSON-able ``get_state``/``set_state`` (as ``pipeline.DataIterator``). SIGTERM before
    the first step finishes ends the process (exit code 143; nothing to save).
    """
    config_lib.validate(config)
    config = config.copy_and_resolve_references()
    workdir = paths.resolve(workdir)
    with preemption_lib.Preemption() as preemption:
        return _train(config, workdir, data, preemption)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, data: Any,
           preemption: preemption_lib.Preemption) -> TrainResult:
    model = model_config(config)
    mesh = make_mesh((config.mesh.data, config.mesh.fsdp, config.mesh.tensor))
    step_lib.check_batch_size(config.data.batch_size, mesh, config.train.grad_accum_steps)
    total_steps = config.train.steps
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)
    init_image = init_model.init_image_format(config)
    if config.data.size_prefix is None and init_image is not None and init_image.size_prefix:
        config.data.size_prefix = True  # as the init model was trained; else the data's grids decide
    tokenizer = init_model.tokenizer_path(config, workdir)
    if data is None:
        data = make_data(config, model, mesh, tokenizer)
    init_model.keep_tokenizer(tokenizer, workdir)
    image = init_model.run_image_format(config, data, init_image)
    card = make_card(model.replace(dtype=model.param_dtype, remat="none", scan_layers=False,
                                   attention="auto"), image,
                     source=f"training run {workdir.name}")
    checkpointer = train_state.TrainCheckpointer(
        workdir, save_every=config.checkpoint.every, keep=config.checkpoint.keep,
        use_async=config.checkpoint.use_async,
    )
    try:
        start, parts, params, opt_state, opt_shardings = _initial_state(config, model, mesh, tx, checkpointer, data)
        return _loop(config, workdir, model, mesh, tx, schedule, checkpointer, data, card, preemption,
                     start, parts, params, opt_state, opt_shardings)
    finally:
        checkpointer.close()
        if hasattr(data, "close"):
            data.close()


def _loop(config, workdir, model, mesh, tx, schedule, checkpointer, data, card, preemption,
          start, parts, params, opt_state, opt_shardings) -> TrainResult:
    total_steps = config.train.steps
    options = step_lib.StepOptions.from_config(config.train, model)
    step_fn = step_lib.jit_train_step(
        step_lib.make_train_step(parts.graphdef, parts.rest, tx, schedule, options),
        parts.param_shardings, opt_shardings, mesh,
    )

    tokens_per_step = config.data.batch_size * config.data.seq_len
    flops_per_step = flops.training_flops_per_token(model, config.data.seq_len) * tokens_per_step
    peak = config.train.peak_flops_per_device or flops.peak_flops_per_device()
    peak_total = peak * jax.device_count() if peak else None
    run_config = train_state.config_json(config)

    writer = metrics_lib.MetricsWriter(workdir)
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step",
               disable=jax.process_index() != 0, dynamic_ncols=True)
    skipped, last, preempted, done = 0, {}, False, start
    pending: tuple[int, dict[str, jax.Array]] | None = None
    last_time = time.perf_counter()

    def report(step: int, device_metrics: dict[str, jax.Array]) -> None:
        nonlocal skipped, last, last_time
        values = _host_metrics(device_metrics)
        preemption.arm()  # a step has finished: from now on SIGTERM saves it
        now = time.perf_counter()
        seconds, last_time = now - last_time, now
        if not values.pop("finite"):
            message = (
                f"step {step}: non-finite loss {values['loss']} / grad norm {values['grad_norm']}; "
                f"the update was not applied (last checkpoint: step {checkpointer.latest_step()})"
            )
            if config.train.nan_policy == "stop":
                raise NonFiniteLossError(
                    message + ". Set --config.train.nan_policy=skip to skip such steps."
                )
            skipped += 1
            logging.warning("%s; skipping (train.nan_policy=skip)", message)
        values.update(
            step_seconds=seconds,
            tokens_per_second=tokens_per_step / seconds,
            skipped_steps=skipped,
        )
        if peak_total:
            values["mfu"] = flops_per_step / seconds / peak_total
        if step % config.train.log_every == 0 or step == total_steps:
            writer.write(step, {**values, **_data_metrics(data)})
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        bar.update(1)
        last = values

    def save(step: int) -> None:
        checkpointer.save(step, {"params": params, "opt_state": opt_state}, data, run_config, card, force=True)

    try:
        with jax.set_mesh(mesh):
            for step in range(start + 1, total_steps + 1):
                batch = next(data)
                params, opt_state, device_metrics = step_fn(
                    params, opt_state, {k: batch[k] for k in step_lib.BATCH_KEYS}
                )
                if pending is not None:
                    report(*pending)
                pending, done = (step, device_metrics), step
                if preemption.should_stop(step):
                    report(*pending)
                    pending = None
                    save(step)
                    preempted = True
                    logging.warning("preempted: saved step %d, stopping", step)
                    break
                if step % config.checkpoint.every == 0 or step == total_steps:
                    save(step)
            if pending is not None:
                report(*pending)
    finally:
        writer.close()
        bar.close()
    return TrainResult(step=done, preempted=preempted, skipped_steps=skipped, last_metrics=last)
