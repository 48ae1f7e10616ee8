"""The training loop: build or resume the state, step, log, checkpoint, stop cleanly.

One process per host; every process runs this same loop over the global mesh. The
loop dispatches step ``s + 1`` before reading the metrics of step ``s``, so the host
never waits on the device just to log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from tqdm import tqdm

from liquid_jax import checkpoint as model_checkpoint
from liquid_jax.data import pipeline
from liquid_jax.model.config import TransformerConfig
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer.text import load_text_tokenizer
from liquid_jax.train import checkpointing, flops
from liquid_jax.train import config as config_lib
from liquid_jax.train import metrics as metrics_lib
from liquid_jax.train import optimizer as optimizer_lib
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


class _Preemption:
    """SIGTERM (TPU maintenance, spot preemption, SLURM time limit) -> save, then stop.

    One process: a Python signal handler sets a flag. Several processes: jax's
    coordination service already watches SIGTERM and every process learns at the
    same step (``reached_preemption_sync_point``), so all save the same step together.
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._multi = jax.process_count() > 1

    def __enter__(self):
        if not self._multi:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint after the current step")
        self.requested = True

    def should_stop(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def model_config(config: ml_collections.ConfigDict) -> TransformerConfig:
    return TransformerConfig.from_dict(config.model.to_dict())


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The run config as plain JSON data (stored with every checkpoint)."""
    return json.loads(config.to_json_best_effort())


def make_data(config: ml_collections.ConfigDict, model: TransformerConfig, mesh) -> pipeline.DataIterator:
    if not config.tokenizer:
        raise ValueError("config.tokenizer is empty: set --config.tokenizer=<tokenizer file or HF dir>")
    tokenizer = load_text_tokenizer(config.tokenizer)
    return pipeline.make_iterator(
        config.data, tokenizer, model.special_tokens, model.text_vocab_size, mesh=mesh
    )


def initial_params(
    config: ml_collections.ConfigDict, model: TransformerConfig, mesh
) -> state_lib.ModelParts:
    """Params from scratch, a liquid_jax checkpoint, or a Hugging Face directory
    (vocabulary extended by ``model.num_image_codes``), placed on ``mesh``."""
    if config.init.kind == "scratch":
        return state_lib.init_parts(model, mesh, config.train.seed)
    path = config.init.path
    parts = state_lib.abstract_parts(model, mesh)
    if config.init.kind == "hf":
        from liquid_jax.convert import hf as hf_convert

        stored, loaded = hf_convert.load_hf_params(
            path, dtype=model.param_dtype, extend_image_codes=model.num_image_codes,
            vocab_pad_multiple=model.vocab_pad_multiple, mesh=mesh,
        )
        stored_config = stored.to_dict()
    else:
        stored_config = model_checkpoint.read_metadata(path).get("config", {})
    diff = checkpointing.model_differences(stored_config, model.to_dict())
    if diff:
        raise checkpointing.IncompatibleCheckpointError(
            f"init.path {path} holds a different model than config.model:\n  " + "\n  ".join(diff)
        )
    if config.init.kind == "checkpoint":
        loaded, _ = model_checkpoint.load_params(
            path, abstract=parts.params, shardings=parts.param_shardings
        )
    nnx.replace_by_pure_dict(parts.params, loaded)
    return parts


def _initial_state(config, model, mesh, tx, checkpointer, latest, data):
    """(parts, params, opt_state, opt_shardings): restored from checkpoint ``latest``
    (the data iterator too), or freshly initialised when ``latest`` is None."""
    if latest is None:
        parts = initial_params(config, model, mesh)
        opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
        return parts, parts.params, state_lib.init_opt_state(tx, parts.params, opt_shardings), opt_shardings
    parts = state_lib.abstract_parts(model, mesh)
    opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
    abstract_opt = state_lib.abstract_opt_state(tx, parts.params, opt_shardings)
    params, opt_state = checkpointer.restore(latest, parts.params, abstract_opt, data)
    logging.info("resumed from %s at step %d", checkpointer.directory, latest)
    return parts, params, opt_state, opt_shardings


def _host_metrics(device_metrics: dict[str, jax.Array]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in jax.device_get(device_metrics).items()}


def train(config: ml_collections.ConfigDict, workdir: str, data: Any = None) -> TrainResult:
    """Runs (or resumes) the training described by ``config`` in ``workdir``.

    ``data`` replaces the configured pipeline: any iterator of global batches with
    JSON-able ``get_state``/``set_state`` (as ``pipeline.DataIterator``).
    """
    config_lib.validate(config)
    workdir = epath.Path(workdir)
    model = model_config(config)
    mesh = make_mesh((config.mesh.data, config.mesh.fsdp, config.mesh.tensor))
    step_lib.check_batch_size(config.data.batch_size, mesh, config.train.grad_accum_steps)
    total_steps = config.train.steps
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)
    checkpointer = checkpointing.TrainCheckpointer(
        workdir, save_every=config.checkpoint.every, keep=config.checkpoint.keep,
        use_async=config.checkpoint.use_async,
    )
    latest = checkpointer.latest_step()
    if latest is not None:
        checkpointer.check_model(latest, model.to_dict())
    if data is None:
        data = make_data(config, model, mesh)

    parts, params, opt_state, opt_shardings = _initial_state(config, model, mesh, tx, checkpointer, latest, data)
    start = latest or 0

    options = step_lib.StepOptions.from_config(config.train, model)
    step_fn = step_lib.jit_train_step(
        step_lib.make_train_step(parts.graphdef, parts.rest, tx, schedule, options),
        parts.param_shardings, opt_shardings, mesh,
    )

    tokens_per_step = config.data.batch_size * config.data.seq_len
    flops_per_step = flops.training_flops_per_token(model, config.data.seq_len) * tokens_per_step
    peak = config.train.peak_flops_per_device or flops.peak_flops_per_device()
    peak_total = peak * jax.device_count() if peak else None
    run_config = config_json(config)

    writer = metrics_lib.MetricsWriter(workdir)
    bar = tqdm(total=total_steps, initial=start, desc="train", unit="step",
               disable=jax.process_index() != 0, dynamic_ncols=True)
    skipped, last, preempted, done = 0, {}, False, start
    pending: tuple[int, dict[str, jax.Array]] | None = None
    last_time = time.perf_counter()

    def report(step: int, device_metrics: dict[str, jax.Array]) -> None:
        nonlocal skipped, last, last_time
        values = _host_metrics(device_metrics)
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
            writer.write(step, values)
        bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        bar.update(1)
        last = values

    try:
        with _Preemption() as preemption, jax.set_mesh(mesh):
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
                    checkpointer.save(step, params, opt_state, data, run_config, force=True)
                    preempted = True
                    logging.warning("preempted: saved step %d, stopping", step)
                    break
                if step % config.checkpoint.every == 0 or step == total_steps:
                    checkpointer.save(step, params, opt_state, data, run_config, force=True)
            if pending is not None:
                report(*pending)
    finally:
        checkpointer.close()
        writer.close()
        bar.close()
    return TrainResult(step=done, preempted=preempted, skipped_steps=skipped, last_metrics=last)
