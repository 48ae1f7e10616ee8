"""``liquid-jax train-vqgan --config configs/vqgan_tiny.py --workdir DIR``: train a VQGAN.

Resumes from the newest checkpoint in DIR; writes metrics (JSONL, TensorBoard), PNG grids of
reconstructions and the final model (loadable with ``liquid_jax.load_vqgan``). On several
hosts, run the same command on every host; SIGTERM saves a checkpoint and stops.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from liquid_jax.train import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "VQGAN training config file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output directory (checkpoints, metrics, images)")
distributed.define_flags()


def main(argv: list[str]) -> None:
    del argv
    if _CONFIG.value is None or _WORKDIR.value is None:
        raise app.UsageError("train-vqgan needs --config=... and --workdir=...")
    from liquid_jax.train.vqgan.trainer import train

    distributed.initialize_from_flags()
    print(json.dumps(train(_CONFIG.value, _WORKDIR.value)))
