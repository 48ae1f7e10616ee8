"""Field names of earlier versions that files on disk may still hold, and their names now
(README "Names"). Readers pass what they load through ``current``."""

from __future__ import annotations

from typing import Any, Mapping

VQGAN_CONFIG = {"n_embed": "num_image_codes"}  # VQGAN cards, train-vqgan checkpoints' run configs
MANIFEST_VQGAN = {"codebook_size": "num_image_codes"}  # "vqgan" of a shard folder's dataset.json
EVAL_GENERATE_SETTINGS = {"cfg": "guidance_scale"}  # eval_generate.json of ``liquid-jax eval generate``
_DEMO_RUN = {  # the demo's own run schema before its runs were trainer configs
    "steps": "train.steps", "batch_size": "data.batch_size", "seq_len": "data.seq_len",
    "packing_bins": "data.packing_bins", "t2i_ratio": "data.t2i_ratio", "cfg_drop": "data.cfg_drop",
    "learning_rate": "optimizer.learning_rate", "warmup_steps": "optimizer.warmup_steps",
    "end_lr_fraction": "optimizer.end_lr_fraction", "weight_decay": "optimizer.weight_decay",
}
DEMO_CONFIG = {  # --config.KEY overrides of ``liquid-jax demo`` (README commands of earlier versions)
    **{f"{run}.{old}": f"{run}.{new}" for run in ("base", "liquid") for old, new in _DEMO_RUN.items()},
    "liquid.text_weight": "liquid_mix.text_weight", "liquid.image_weight": "liquid_mix.image_weight",
    "sample.cfg": "sample.guidance_scale", "vqgan.model.n_embed": "vqgan.model.num_image_codes",
}


def current_overrides(argv: list[str], renamed: Mapping[str, str], flag: str = "config") -> list[str]:
    """Command-line arguments with ``--FLAG.KEY[=VALUE]`` overrides of former keys renamed."""

    def one(arg: str) -> str:
        prefix = f"--{flag}."
        if not arg.startswith(prefix):
            return arg
        key, sep, value = arg[len(prefix):].partition("=")
        return f"{prefix}{renamed.get(key, key)}{sep}{value}"

    return [one(arg) for arg in argv]


def current(fields: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """``fields`` with the names of earlier versions (``renamed``: former -> current) replaced."""
    return {renamed.get(k, k): v for k, v in fields.items()}
