"""What the base-LM and Liquid stages share: their trainer configs (the demo config's
``base`` and ``liquid``, checked before anything runs) with the fields a stage decides
filled in, and running them."""

from __future__ import annotations

import os
from typing import Any, Sequence

import ml_collections

from liquid_jax.errors import UserError
from liquid_jax.train import config as train_config_lib
from liquid_jax.train import trainer
from liquid_jax.train.metrics import JSONL_NAME

TRAIN_DIR = "train"
RUNS = ("base", "liquid")
MIX_WEIGHTS = ("text_weight", "image_weight")


def check_mix(mix: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the ``liquid_mix`` key of a weight that is not a number >= 0,
    or when no weight is above 0."""
    for key in MIX_WEIGHTS:
        value = mix[key]
        train_config_lib.check_value(train_config_lib.finite(value) and value >= 0, f"liquid_mix.{key}", value,
                                     "a number >= 0")
    if not any(mix[key] > 0 for key in MIX_WEIGHTS):
        raise UserError("a Liquid run needs liquid_mix.text_weight > 0 or liquid_mix.image_weight > 0")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises UserError naming the demo config's key (``liquid.data.batch_size``) of the
    first invalid setting of its trainer configs and of ``liquid_mix``."""
    for section in RUNS:
        train_config_lib.validate(config[section], section)
    check_mix(config.liquid_mix)


def trainer_config(
    run: ml_collections.ConfigDict, model: dict[str, Any], tokenizer: str, sources: Sequence[dict[str, Any]]
) -> ml_collections.ConfigDict:
    """``run`` (a trainer config of the demo) for a model of these config fields, with the
    demo's ``tokenizer`` and data ``sources``; ``run.model`` keeps its dtypes."""
    config = run.copy_and_resolve_references()
    config.model = ml_collections.ConfigDict({**model, **config.model.to_dict()})
    config.data.num_image_codes = config.model.num_image_codes
    config.tokenizer = tokenizer
    config.data.sources = tuple(sources)
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
