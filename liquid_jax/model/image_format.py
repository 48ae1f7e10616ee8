"""ImageFormat: how a Liquid model expects images to be written, besides its vocabulary.

A model is trained on codes of one VQGAN, on some code grids, with or without the size
prefix ("Image Size: Width is {w} Height is {h}." before the image). Training records
these properties, export carries them into the checkpoint card and the Hugging Face
config.json, and loading reads them back, so sampling prompts a model exactly as it was
trained, instead of guessing from the grid. A model imported from upstream's layout
(``Liquid_V1_7B``) has no size prefix, 16 pixels per code and the 32x32 grid.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from liquid_jax.errors import UserError

DEFAULT_GRID = (32, 32)  # upstream's 512 x 512 images with Chameleon's VQGAN
DEFAULT_PIXELS_PER_CODE = 16  # Chameleon's VQGAN downsamples by 16
# config.json keys (Hugging Face export); absent in upstream's checkpoints.
HF_KEYS = {
    "size_prefix": "image_size_prefix",
    "pixels_per_code": "image_pixels_per_code",
    "grids": "image_grids",
    "vqgan_fingerprint": "vqgan_fingerprint",
}


@dataclasses.dataclass(frozen=True)
class ImageFormat:
    """``size_prefix``: image sequences start with the size sentence; ``pixels_per_code``:
    the VQGAN's downsampling (pixels per code side; None: unknown, e.g. a model not yet
    trained on images); ``grids``: the (h, w) code grids the model was trained on (empty:
    unknown); ``vqgan_fingerprint``: the codebook of the VQGAN whose codes it learned
    (``ImageCodec.fingerprint``; None: unknown). Unknown properties are not checked.
    """

    size_prefix: bool = False
    pixels_per_code: int | None = None
    grids: tuple[tuple[int, int], ...] = ()
    vqgan_fingerprint: str | None = None

    def __post_init__(self):
        if self.pixels_per_code is not None and self.pixels_per_code < 1:
            raise ValueError(f"pixels_per_code must be >= 1, got {self.pixels_per_code}")
        object.__setattr__(self, "grids", tuple((int(h), int(w)) for h, w in self.grids))

    @property
    def default_grid(self) -> tuple[int, int]:
        """The grid to sample at when none is asked for: the first trained one, else 32x32."""
        return self.grids[0] if self.grids else DEFAULT_GRID

    def replace(self, **changes: Any) -> "ImageFormat":
        return dataclasses.replace(self, **changes)

    def check_vqgan(self, num_image_codes: int, codec: Any, vqgan: Any = "the VQGAN") -> None:
        """Refuses a VQGAN ``codec`` (an ImageCodec) whose codes are not the ones the model
        learned: another codebook size, another downsampling, another recorded codebook."""
        problems = []
        if codec.num_image_codes != num_image_codes:
            problems.append(f"its codebook has {codec.num_image_codes} codes, the model {num_image_codes}")
        if self.pixels_per_code is not None and codec.pixels_per_code != self.pixels_per_code:
            problems.append(f"it has {codec.pixels_per_code} pixels per code, the model was trained "
                            f"with {self.pixels_per_code}")
        if self.vqgan_fingerprint and codec.fingerprint != self.vqgan_fingerprint:
            problems.append(f"its codebook fingerprint is {codec.fingerprint}, the model was trained on "
                            f"the codes of {self.vqgan_fingerprint}")
        if problems:
            raise UserError(f"{vqgan} does not match the model: " + "; ".join(problems)
                            + ". Use the VQGAN the model was trained with.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_prefix": self.size_prefix,
            "pixels_per_code": self.pixels_per_code,
            "grids": [list(g) for g in self.grids],
            "vqgan_fingerprint": self.vqgan_fingerprint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageFormat":
        unknown = sorted(set(d) - set(HF_KEYS))
        if unknown:
            raise ValueError(f"unknown image format fields {unknown}; known: {sorted(HF_KEYS)}")
        return cls(
            size_prefix=bool(d.get("size_prefix", False)),
            pixels_per_code=None if d.get("pixels_per_code") is None else int(d["pixels_per_code"]),
            grids=tuple(tuple(g) for g in d.get("grids") or ()),
            vqgan_fingerprint=d.get("vqgan_fingerprint"),
        )

    def to_hf(self) -> dict[str, Any]:
        """The config.json entries that record this format."""
        return {HF_KEYS[k]: v for k, v in self.to_dict().items()}

    @classmethod
    def from_hf(cls, hf_config: Mapping[str, Any], num_image_codes: int) -> "ImageFormat":
        """The format recorded in a config.json; upstream's when none is and the model has
        image codes (a text-only model gets the defaults, no grid)."""
        recorded = {k: hf_config[key] for k, key in HF_KEYS.items() if key in hf_config}
        if recorded:
            return cls.from_dict(recorded)
        return UPSTREAM if num_image_codes else cls()


UPSTREAM = ImageFormat(size_prefix=False, pixels_per_code=DEFAULT_PIXELS_PER_CODE, grids=(DEFAULT_GRID,))
