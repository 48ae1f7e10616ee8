"""Shared by the training tests: tiny mixed data on disk and the tiny run config."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np

from helpers import REPO, data_support
from liquid_jax.model.config import load_config_file

TINY_CONFIG = os.path.join(REPO, "configs", "tiny_liquid.py")
NUM_CODES = 64  # tiny_liquid's image codes


def write_mixed_data(directory: str) -> dict[str, str]:
    """A SentencePiece model plus text and image shards; returns their paths."""
    rng = np.random.default_rng(0)
    data_support.train_tokenizer(directory)
    data_support.write_text_shards(
        os.path.join(directory, "text"), data_support.text_records(rng, 200, (5, 40), "t"), 2
    )
    data_support.write_image_shards(
        os.path.join(directory, "image"),
        data_support.image_records(rng, 200, (4, 4), NUM_CODES, "i"),
        2,
    )
    return {
        "tokenizer": os.path.join(directory, "sp.model"),
        "text": os.path.join(directory, "text"),
        "image": os.path.join(directory, "image"),
    }


def overrides(paths: dict[str, str]) -> list[str]:
    """Command-line overrides pointing tiny_liquid at the test data."""
    sources = (
        f'({{"path": "{paths["text"]}", "kind": "text"}}, '
        f'{{"path": "{paths["image"]}", "kind": "image"}})'
    )
    return [
        f"--config.tokenizer={paths['tokenizer']}",
        f"--config.model.vocab_size={data_support.TEXT_VOCAB + NUM_CODES}",
        f"--config.data.sources={sources}",
    ]


def tiny_config(paths: dict[str, str], preset: str = "smoke"):
    config = load_config_file(TINY_CONFIG, preset)
    config.tokenizer = paths["tokenizer"]
    config.model.vocab_size = data_support.TEXT_VOCAB + NUM_CODES
    config.data.sources = (
        {"path": paths["text"], "kind": "text"},
        {"path": paths["image"], "kind": "image"},
    )
    return config


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "liquid_jax.cli", *args]


def cli_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    return env


def free_port() -> int:
    """A localhost TCP port nobody listens on (for a jax.distributed coordinator)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
