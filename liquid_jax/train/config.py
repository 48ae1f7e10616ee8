"""Training run configs: defaults for every section, base-model loading, override checks.

A run config (``configs/*_liquid.py``) is ``train_config(model)`` with a few fields
changed. Sections: ``model`` (TransformerConfig fields), ``tokenizer`` (file or Hugging
Face directory), ``data`` (``liquid_jax.data.pipeline``), ``mesh``, ``optimizer``,
``train``, ``checkpoint`` and ``init``.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from typing import Any, Sequence

import ml_collections
from absl import flags

from liquid_jax.data import pipeline
from liquid_jax.errors import UserError
from liquid_jax.model.config import load_config_file

INIT_KINDS = ("scratch", "checkpoint", "hf")
NAN_POLICIES = ("stop", "skip")


def base_model(config_file: str, relative_to: str) -> ml_collections.ConfigDict:
    """The ``model`` section of a sibling config file (e.g. ``gemma_7b.py``)."""
    return load_config_file(os.path.join(os.path.dirname(relative_to), config_file)).model


def train_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A complete run config around ``model`` with the paper's optimiser defaults."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.model.dtype = "bfloat16"  # compute; params and optimizer state stay float32
    config.model.param_dtype = "float32"
    config.tokenizer = ""  # .model / tokenizer.json file or a Hugging Face directory

    data = pipeline.default_config().to_dict()
    # A tuple so `--config.data.sources='({"path": ..., "kind": "text"}, ...)'` can set it;
    # entries: {"name", "path", "kind": "text" | "image" (default: read from the shards), "weight"}.
    data["sources"] = ()
    data["size_prefix"] = None  # None: as the init model was trained, or on for several grids
    config.data = ml_collections.ConfigDict(data)
    if "num_image_codes" in config.model:
        config.data.num_image_codes = config.model.get_ref("num_image_codes")

    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

    config.optimizer = ml_collections.ConfigDict(
        dict(
            learning_rate=2e-5,
            schedule="cosine",  # cosine | constant (the paper's scaling runs)
            warmup_fraction=0.03,
            warmup_steps=-1,  # >= 0 overrides warmup_fraction
            end_lr_fraction=0.0,
            weight_decay=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            grad_clip_norm=1.0,
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            steps=1000,
            seed=0,
            grad_accum_steps=1,
            z_loss=0.0,  # coefficient of logsumexp(logits)^2
            loss_chunk_size=32768,  # vocabulary rows per cross-entropy chunk; 0 = all
            nan_policy="stop",  # stop | skip
            log_every=1,
            peak_flops_per_device=0.0,  # 0: look up the device kind
        )
    )
    config.checkpoint = ml_collections.ConfigDict(dict(every=1000, keep=3, use_async=True))
    # scratch | checkpoint (a liquid_jax checkpoint, e.g. `liquid-jax convert hf` output)
    # | hf (a Hugging Face directory, converted and vocabulary-extended on the fly)
    config.init = ml_collections.ConfigDict(dict(kind="scratch", path=""))
    return config


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite int or float."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def check_value(ok: bool, key: str, value: Any, wanted: str) -> None:
    """Raises UserError naming ``key`` (and the flag that sets it) with ``value`` unless ``ok``."""
    if not ok:
        raise UserError(f"config.{key} {value!r} is invalid: it must be {wanted} (--config.{key}=...)")


def validate(config: ml_collections.ConfigDict, section: str = "") -> None:
    """Raises UserError naming the key of the first invalid setting; ``section`` is where
    ``config`` sits in a larger config (the demo's ``liquid``), so that the key is the one
    to override."""
    at = f"{section}." if section else ""
    check_value(config.init.kind in INIT_KINDS, f"{at}init.kind", config.init.kind, f"one of {INIT_KINDS}")
    if config.init.kind != "scratch" and not config.init.path:
        raise UserError(f"{at}init.kind={config.init.kind!r} needs {at}init.path (--config.{at}init.path=...)")
    check_value(config.train.nan_policy in NAN_POLICIES, f"{at}train.nan_policy", config.train.nan_policy,
                f"one of {NAN_POLICIES}")
    for key in ("train.steps", "train.grad_accum_steps", "data.batch_size", "checkpoint.every",
                "checkpoint.keep", "train.log_every"):
        value = config[key.split(".")[0]][key.split(".")[1]]
        check_value(isinstance(value, int) and value >= 1, at + key, value, "an integer >= 1")
    check_value(isinstance(config.data.seq_len, int) and config.data.seq_len >= 2, f"{at}data.seq_len",
                config.data.seq_len, "an integer >= 2")
    for key in ("data.t2i_ratio", "data.cfg_drop", "data.max_skip_fraction"):
        value = config.data[key.split(".")[1]]
        check_value(finite(value) and 0.0 <= value <= 1.0, at + key, value, "a number in [0, 1]")
    lr = config.optimizer.learning_rate
    check_value(finite(lr) and lr > 0, f"{at}optimizer.learning_rate", lr, "a positive number")
    for key in ("train.z_loss", "optimizer.weight_decay", "optimizer.grad_clip_norm"):
        value = config[key.split(".")[0]][key.split(".")[1]]
        check_value(finite(value) and value >= 0, at + key, value, "a finite number >= 0")


_OVERRIDE = re.compile(r"^--?(?P<flag>[A-Za-z_]\w*)\.(?P<key>[\w.]+)(=|$)")


def unknown_override(config: ml_collections.ConfigDict, dotted: str) -> str | None:
    """An error message if ``dotted`` (e.g. ``train.grad_acum``) is not a config key."""
    node, walked = config, []
    for part in dotted.split("."):
        keys = list(node.keys()) if isinstance(node, (ml_collections.ConfigDict, dict)) else []
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node, walked = node[int(part)], walked + [part]
            continue
        if part not in keys:
            where = ".".join(walked) or "the config"
            near = difflib.get_close_matches(part, keys, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else f"valid keys: {', '.join(sorted(keys))}"
            return f"unknown config key {dotted!r}: {where} has no {part!r}; {hint}"
        node, walked = node[part], walked + [part]
    return None


def check_overrides(argv: Sequence[str], flag: str = "config") -> None:
    """Checks every ``--config.a.b=value`` of ``argv`` against the config file named by
    ``--config``; raises ValueError naming the nearest valid keys."""
    path = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{flag}="):
            path = arg.split("=", 1)[1]
        elif arg == f"--{flag}" and i + 1 < len(argv):
            path = argv[i + 1]
    if not path:
        return
    file, _, arg = path.partition(":")
    config = load_config_file(file, arg or None)
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match and match["flag"] == flag:
            message = unknown_override(config, match["key"])
            if message:
                raise ValueError(message)


def scaling_run_config(base_file: str, relative_to: str, large: bool) -> ml_collections.ConfigDict:
    """The paper's scaling runs (Gemma-2 2B/9B/27B, Llama-3.2 1B): mixed text + image
    data, batch 512 x 2048, constant lr 2e-5; ``large`` (7B+) clips at 0.5 and adds z-loss."""
    config = train_config(base_model(base_file, relative_to))
    config.model.remat = "full"
    config.model.scan_layers = True
    config.mesh.data, config.mesh.fsdp = 1, -1
    config.data.seq_len = 2048
    config.data.batch_size = 512
    config.data.t2i_ratio = 0.8
    config.optimizer.schedule = "constant"
    config.optimizer.grad_clip_norm = 0.5 if large else 1.0
    config.train.z_loss = 1e-4 if large else 0.0
    config.train.steps = 60_000
    config.train.loss_chunk_size = 16_384
    config.init.kind = "checkpoint"  # a `liquid-jax convert hf` output of the base model
    return config


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing for commands taking ``--config``: an unknown ``--config.*`` key
    raises UserError naming the nearest valid keys."""
    try:
        check_overrides(argv)
    except (ValueError, FileNotFoundError, AttributeError) as e:
        raise UserError(str(e)) from e
    return flags.FLAGS(argv)
