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
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from tqdm import tqdm

from liquid_jax import lm_checkpoint, paths
from liquid_jax.convert import hf as hf_convert
from liquid_jax.data import pipeline
from liquid_jax.errors import Interrupted, UserError
from liquid_jax.model.card import TOKENIZER_SUBDIR, make_card
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import DEFAULT_PIXELS_PER_CODE, ImageFormat
from liquid_jax.sharding import make_mesh
from liquid_jax.tokenizer.text import load_text_tokenizer, tokenizer_sources
from liquid_jax.train import checkpointing, export, flops
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

    One process: a Python signal handler sets a flag, or, before the first step has
    finished (``armed`` False: building the state, compiling, waiting for data), stops
    the run at once since there is nothing to save. Several processes: jax's
    coordination service already watches SIGTERM and every process learns at the
    same step (``reached_preemption_sync_point``), so all save the same step together.
    """

    def __init__(self):
        self.requested = False
        self.armed = False
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
        if not self.armed:
            raise Interrupted("SIGTERM before the first step finished; nothing to save")
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


def _init_tokenizer_dir(config: ml_collections.ConfigDict) -> str | None:
    path = config.init.path
    if config.init.kind == "hf":
        return hf_convert.tokenizer_location(paths.local(path, "init.path"))
    folder = lm_checkpoint.tokenizer_dir(path)
    return None if folder is None else str(folder)


def tokenizer_path(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> str:
    """``config.tokenizer``; else the init model's tokenizer; else the workdir's copy."""
    if config.tokenizer:
        return config.tokenizer
    found = _init_tokenizer_dir(config) if config.init.kind != "scratch" else None
    kept = paths.resolve(workdir) / TOKENIZER_SUBDIR
    if found is None and kept.is_dir():
        found = str(kept)
    if found is None:
        raise UserError("config.tokenizer is empty and there is no tokenizer to take it from; set "
                        "--config.tokenizer=<tokenizer.model / tokenizer.json / Hugging Face directory>")
    return found


def keep_tokenizer(source: str, workdir: str | epath.PathLike) -> None:
    """Copies the tokenizer's files into ``<workdir>/tokenizer`` (process 0), or checks that
    a resumed run uses the same ones."""
    kept = paths.resolve(workdir) / TOKENIZER_SUBDIR
    files = tokenizer_sources(source)
    if kept.exists():
        changed = [n for n, f in files.items() if not (kept / n).exists() or (kept / n).read_bytes() != epath.Path(f).read_bytes()]
        if changed and os.path.abspath(source) != os.fspath(kept):
            raise checkpointing.IncompatibleCheckpointError(
                f"{workdir} was trained with another tokenizer ({', '.join(changed)} differ from {source}); "
                "use a new --workdir or the run's own tokenizer")
        return
    if jax.process_index() == 0:
        kept.mkdir(parents=True)
        for name, f in files.items():
            epath.Path(f).copy(kept / name)


def make_data(config: ml_collections.ConfigDict, model: TransformerConfig, mesh, tokenizer: str) -> pipeline.DataIterator:
    return pipeline.make_iterator(
        config.data, load_text_tokenizer(tokenizer), model.special_tokens, model.text_vocab_size, mesh=mesh
    )


def init_image_format(config: ml_collections.ConfigDict) -> ImageFormat | None:
    """The image format recorded by the model training starts from (None from scratch)."""
    kind, path = config.init.kind, config.init.path
    if kind == "hf":
        return hf_convert.hf_image_format(path)
    if kind == "checkpoint" and checkpointing.is_workdir(path) and not lm_checkpoint.is_model_checkpoint(path):
        checkpointer = checkpointing.TrainCheckpointer(path, read_only=True)
        try:
            return checkpointer.restore_model(None, lambda card, _: ImageFormat.from_dict(card.get("image", {})))[1]
        finally:
            checkpointer.close()
    if kind == "checkpoint":
        return lm_checkpoint.read_model_card(path)[1]
    return None


def run_image_format(config: ml_collections.ConfigDict, data: Any, init: ImageFormat | None) -> ImageFormat:
    """What the run teaches the model about images: the image shards' VQGAN, pixels per
    code and grids (after those the init model was trained on), and the size prefix."""
    built = getattr(data, "built", None)
    images = [i for i in built.infos.values() if i.kind == "image"] if built is not None else []
    fingerprint = next((i.vqgan.fingerprint for i in images if i.vqgan is not None), None)
    if init is not None and init.vqgan_fingerprint and fingerprint and fingerprint != init.vqgan_fingerprint:
        raise pipeline.DataError(
            f"init.path {config.init.path} learned the codes of VQGAN {init.vqgan_fingerprint}, the image "
            f"shards hold codes of VQGAN {fingerprint}; pre-tokenize with the model's VQGAN")
    grids = [g for i in images for g in i.grids] + list(init.grids if init is not None else ())
    pixels_per_code = built.pixels_per_code if images else None
    pixels_per_code = pixels_per_code or (init.pixels_per_code if init is not None else None)
    if pixels_per_code is None and config.data.size_prefix:  # the size sentences were written with it
        pixels_per_code = config.data.pixels_per_code or DEFAULT_PIXELS_PER_CODE
    return ImageFormat(
        size_prefix=bool(config.data.size_prefix), pixels_per_code=pixels_per_code,
        grids=tuple(dict.fromkeys(grids)),
        vqgan_fingerprint=fingerprint or (init.vqgan_fingerprint if init is not None else None),
    )


def _load_init(config: ml_collections.ConfigDict, model: TransformerConfig, mesh) -> tuple[TransformerConfig, Any]:
    """(stored config, params on ``mesh``) of ``init.path``, with ``model``'s vocabulary padding."""
    path, dtype, pad = config.init.path, model.param_dtype, model.vocab_pad_multiple
    if config.init.kind == "hf":
        return hf_convert.load_hf_params(path, dtype=dtype, extend_image_codes=model.num_image_codes,
                                         vocab_pad_multiple=pad, mesh=mesh)
    if checkpointing.is_workdir(path) and not lm_checkpoint.is_model_checkpoint(path):
        _, stored, _, params = export.load_workdir(path, dtype=dtype, mesh=mesh, vocab_pad_multiple=pad)
    else:
        stored, _, params = lm_checkpoint.load_model(path, dtype=dtype, mesh=mesh, vocab_pad_multiple=pad)
    return stored, params


def initial_params(
    config: ml_collections.ConfigDict, model: TransformerConfig, mesh
) -> state_lib.ModelParts:
    """Params from scratch, a liquid_jax checkpoint or training workdir, or a Hugging Face
    directory (vocabulary extended by ``model.num_image_codes``), placed on ``mesh``;
    the stored vocabulary padding may differ from ``model``'s."""
    if config.init.kind == "scratch":
        return state_lib.init_parts(model, mesh, config.train.seed)
    parts = state_lib.abstract_parts(model, mesh)
    stored, loaded = _load_init(config, model, mesh)
    diff = checkpointing.model_differences(stored.to_dict(), model.to_dict())
    if diff:
        raise checkpointing.IncompatibleCheckpointError(
            f"init.path {config.init.path} holds a different model than config.model:\n  " + "\n  ".join(diff)
        )
    nnx.replace_by_pure_dict(parts.params, loaded)
    return parts


def _initial_state(config, model, mesh, tx, checkpointer, data):
    """(start step, parts, params, opt_state, opt_shardings): restored from the newest
    intact checkpoint (the data iterator too), or freshly initialised."""
    if checkpointer.latest_step() is None:
        parts = initial_params(config, model, mesh)
        opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
        return 0, parts, parts.params, state_lib.init_opt_state(tx, parts.params, opt_shardings), opt_shardings
    parts = state_lib.abstract_parts(model, mesh)
    opt_shardings = state_lib.opt_state_shardings(tx, parts.params, mesh)
    abstract_opt = state_lib.abstract_opt_state(tx, parts.params, opt_shardings)
    step, params, opt_state = checkpointer.restore(parts.params, abstract_opt, data, model.to_dict())
    logging.info("resumed from %s at step %d", checkpointer.directory, step)
    return step, parts, params, opt_state, opt_shardings


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
    the first step finishes raises ``liquid_jax.errors.Interrupted``.
    """
    config_lib.validate(config)
    config = config.copy_and_resolve_references()
    workdir = paths.resolve(workdir)
    with _Preemption() as preemption:
        return _train(config, workdir, data, preemption)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, data: Any, preemption: _Preemption) -> TrainResult:
    model = model_config(config)
    mesh = make_mesh((config.mesh.data, config.mesh.fsdp, config.mesh.tensor))
    step_lib.check_batch_size(config.data.batch_size, mesh, config.train.grad_accum_steps)
    total_steps = config.train.steps
    tx, schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)
    init_image = init_image_format(config)
    if config.data.size_prefix is None:
        config.data.size_prefix = bool(init_image is not None and init_image.size_prefix)
    tokenizer = tokenizer_path(config, workdir)
    if data is None:
        data = make_data(config, model, mesh, tokenizer)
    keep_tokenizer(tokenizer, workdir)
    image = run_image_format(config, data, init_image)
    card = make_card(model.replace(dtype=model.param_dtype, remat="none", scan_layers=False), image,
                     source=f"training run {workdir.name}")
    checkpointer = checkpointing.TrainCheckpointer(
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
        preemption.armed = True  # a step has finished: from now on SIGTERM saves it
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
        checkpointer.save(step, params, opt_state, data, run_config, card, force=True)

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
