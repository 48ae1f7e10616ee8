"""What the base-LM and Liquid stages share: a trainer config for a demo run, and running it."""

from __future__ import annotations

import os
from typing import Any, Sequence

import ml_collections

from liquid_jax.train import config as train_config_lib
from liquid_jax.train import trainer
from liquid_jax.train.metrics import JSONL_NAME

TRAIN_DIR = "train"


def run_config(
    model: ml_collections.ConfigDict,
    run: ml_collections.ConfigDict,
    tokenizer: str,
    sources: Sequence[dict[str, Any]],
    seed: int,
) -> ml_collections.ConfigDict:
    """A trainer config: ``model`` fields, ``run`` (steps, batch, lr, data mix), sources."""
    config = train_config_lib.train_config(model)
    config.model.dtype = "float32"
    config.tokenizer = tokenizer
    config.data.sources = tuple(sources)
    config.data.seq_len = run.seq_len
    config.data.batch_size = run.batch_size
    config.data.packing_bins = run.packing_bins
    config.data.read_threads = 1
    config.data.seed = seed
    config.optimizer.learning_rate = run.learning_rate
    config.optimizer.warmup_steps = run.warmup_steps
    config.optimizer.end_lr_fraction = run.end_lr_fraction
    config.optimizer.weight_decay = run.weight_decay
    config.train.steps = run.steps
    config.train.seed = seed
    config.train.loss_chunk_size = 0
    config.train.log_every = 1
    config.checkpoint.every = run.steps
    config.checkpoint.keep = 1
    config.checkpoint.use_async = False
    return config


class Interrupted(RuntimeError):
    """The trainer stopped early (SIGTERM); its last state is saved and a re-run resumes."""


def train(config: ml_collections.ConfigDict, workdir: str) -> trainer.TrainResult:
    """Runs (or resumes) ``config`` in ``workdir``; raises Interrupted if it was preempted,
    so the stage is not marked done and the demo stops."""
    result = trainer.train(config, workdir)
    if result.preempted:
        raise Interrupted(f"training in {workdir} stopped at step {result.step}; re-run the demo to resume")
    return result


def metrics_path(workdir: str) -> str:
    return os.path.join(workdir, JSONL_NAME)
