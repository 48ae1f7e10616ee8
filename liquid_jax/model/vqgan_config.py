"""VQGANConfig: the taming-transformers / Chameleon VQGAN architecture."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from liquid_jax import former_names

DEFAULT_NUM_IMAGE_CODES = 8192  # Chameleon's codebook: the image codes Liquid adds to a vocabulary


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    """Encoder/decoder widths, depths and the codebook of a taming-style VQGAN.

    Field names follow taming's ``ddconfig`` plus ``embed_dim`` and ``num_image_codes``
    (the codebook size, taming's ``n_embed``); the defaults are Chameleon's 512 px,
    8192-code tokenizer.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 256
    embed_dim: int = 256
    num_image_codes: int = DEFAULT_NUM_IMAGE_CODES
    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    num_groups: int = 32
    norm_eps: float = 1e-6
    beta: float = 0.25
    # Numerics (do not change the checkpoint layout).
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        widths = [self.ch] + [self.ch * m for m in self.ch_mult]
        bad = [w for w in widths if w % self.num_groups]
        if bad:
            raise ValueError(
                f"channel widths {widths} must be multiples of num_groups={self.num_groups} (GroupNorm)"
            )
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level")

    @property
    def pixels_per_code(self) -> int:
        """The side in pixels of the square each code stands for (the downsampling factor)."""
        return 2 ** (len(self.ch_mult) - 1)

    def replace(self, **changes) -> "VQGANConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VQGANConfig":
        """The config of ``to_dict`` output (earlier versions' field names accepted)."""
        d = former_names.current(d, former_names.VQGAN_CONFIG)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VQGANConfig fields: {unknown}")
        return cls(**d)
