"""Accelerator chips: published dense bf16 peak, HBM size and HBM bandwidth per chip.

One table for MFU (the trainer), memory fit and the roofline bound (``liquid-jax plan``).
"""

from __future__ import annotations

import dataclasses

import jax

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip as jax drives it (a TPU v4/v5p chip is one "megacore" device)."""

    name: str
    device_kinds: tuple[str, ...]  # jax ``device_kind`` prefixes
    bf16_flops: float  # dense bf16 FLOP/s
    hbm_bytes: int
    hbm_bytes_per_s: float
    source: str


CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", ("TPU v4",), 275e12, 32 * GiB, 1228e9, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("TPU v5e", ("TPU v5 lite", "TPU v5e"), 197e12, 16 * GiB, 819e9,
                "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("TPU v5p", ("TPU v5p", "TPU v5"), 459e12, 95 * GiB, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("TPU v6e", ("TPU v6 lite", "TPU v6e"), 918e12, 32 * GiB, 1640e9,
                "https://cloud.google.com/tpu/docs/v6e"),
    "H100": Chip("NVIDIA H100 SXM", ("NVIDIA H100",), 989e12, 80 * GiB, 3.35e12,
                 "https://www.nvidia.com/en-us/data-center/h100/"),
    "H200": Chip("NVIDIA H200 SXM", ("NVIDIA H200",), 989e12, 141 * GiB, 4.8e12,
                 "https://www.nvidia.com/en-us/data-center/h200/"),
    "A100": Chip("NVIDIA A100 SXM 80GB", ("NVIDIA A100",), 312e12, 80 * GiB, 2.039e12,
                 "https://www.nvidia.com/en-us/data-center/a100/"),
}
# jax topology generation names -> chip ("v5" is how jax names v5p topologies).
TPU_GENERATIONS = {"v4": "v4", "v5": "v5p", "v5p": "v5p", "v5e": "v5e", "v6e": "v6e"}


def chip_of(device: jax.Device | None = None) -> Chip | None:
    """The chip of a jax device (default: the first), or None when unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    for chip in CHIPS.values():
        if kind.startswith(chip.device_kinds):
            return chip
    return None
