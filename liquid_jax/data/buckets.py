"""Aspect-ratio buckets: the pixel sizes (whole code grids) images are resized to.

A bucket set is every pair of a resolution ``R`` (the side of a square of the same pixel
count) and an aspect ratio ``W:H``: ``R/f`` codes per side scaled by ``sqrt(W/H)`` across
and ``sqrt(H/W)`` down, rounded to whole codes of ``f`` pixels (the VQGAN's downsampling).
An image goes to the bucket of the nearest aspect ratio (in log space), and among those to
the nearest pixel count; it is resized to cover the bucket and center-cropped. One
resolution and 1:1 is the square path upstream uses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from liquid_jax.errors import UserError

SQUARE = ((1, 1),)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A target size in pixels, a whole number of codes each way, made for the nominal
    aspect ratio ``aspect`` (width, height)."""

    height: int
    width: int
    aspect: tuple[int, int] = (1, 1)

    def grid(self, pixels_per_code: int) -> tuple[int, int]:
        """The (h, w) code grid of this size."""
        return self.height // pixels_per_code, self.width // pixels_per_code

    @classmethod
    def of_size(cls, height: int, width: int) -> "Bucket":
        """A bucket of exactly this size; its nominal aspect ratio is the reduced width:height."""
        gcd = math.gcd(width, height)
        return cls(height, width, (width // gcd, height // gcd))

    @property
    def name(self) -> str:
        return f"{self.height}x{self.width}"


def parse_aspects(text: str) -> tuple[tuple[int, int], ...]:
    """"1:1,2:3,3:2" (width:height) -> ((1, 1), (2, 3), (3, 2))."""
    aspects = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        try:
            w, h = (int(x) for x in item.split(":"))
        except ValueError:
            raise UserError(f"--aspect_buckets: {item!r} is not WIDTH:HEIGHT (e.g. 3:2)") from None
        if w < 1 or h < 1:
            raise UserError(f"--aspect_buckets: {item!r} must be positive")
        aspects.append((w, h))
    if not aspects:
        raise UserError("--aspect_buckets is empty; give e.g. 1:1,2:3,3:2")
    return tuple(aspects)


def make_buckets(
    resolutions: Sequence[int], aspects: Sequence[tuple[int, int]], pixels_per_code: int
) -> list[Bucket]:
    """Every (resolution, aspect) bucket, in that order, without repeats."""
    buckets: list[Bucket] = []
    for resolution in resolutions:
        if resolution % pixels_per_code or resolution < pixels_per_code:
            raise UserError(f"resolution {resolution} is not a positive multiple of the VQGAN's "
                            f"{pixels_per_code} pixels per code")
        side = resolution / pixels_per_code
        for w, h in aspects:
            across = max(1, round(side * math.sqrt(w / h)))
            down = max(1, round(side * math.sqrt(h / w)))
            bucket = Bucket(down * pixels_per_code, across * pixels_per_code, (w, h))
            if all(b.name != bucket.name for b in buckets):
                buckets.append(bucket)
    return buckets


def closest(buckets: Sequence[Bucket], width: int, height: int) -> Bucket:
    """The bucket of the nearest nominal aspect ratio, then the nearest pixel count (both
    in log space; rounding to whole codes does not move an image to another aspect)."""
    shape = math.log(width / height)
    area = math.log(width * height)
    return min(buckets, key=lambda b: (abs(math.log(b.aspect[0] / b.aspect[1]) - shape),
                                       abs(math.log(b.width * b.height) - area)))
