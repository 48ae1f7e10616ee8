"""Reading shapes-world images back into scenes, and the accuracies built on that.

:func:`read_scene` finds shapes by pixel analysis. The background colour is the median
of the image's border; connected regions far from it are shapes. A shape's colour is the
palette colour nearest to its median pixel. Its outline is re-thresholded half way
between background and that colour, which undoes blur. Each kind's mask is then placed
with the outline's area and centroid, and the kind whose mask (blurred a little or not,
scaled in intensity) best matches the pixels wins; that mask's box gives size and position. Generated images and
VQGAN reconstructions are noisy, so every step uses robust statistics, not exact pixels.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np
from scipy import ndimage

from liquid_jax.shapes.captions import parse_caption
from liquid_jax.shapes.world import (
    COLOURS,
    KINDS,
    POSITIONS,
    SIZES,
    Scene,
    Shape,
    check_canvas,
    grid_centres,
    kind_mask,
    shape_mask,
)

BORDER = 2
# A pixel is foreground if it is this far (RGB Euclidean) from the background; every
# palette colour is more than twice as far from the background as this.
FOREGROUND_DISTANCE = 90.0
# Blobs smaller than this are noise: the smallest shape covers about 128 pixels.
MIN_AREA = 40
_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], np.float32)
_SIZE_THRESHOLD = (SIZES["small"] + SIZES["large"]) / 2
_POSITION_BY_CELL = {cell: name for name, cell in POSITIONS.items()}
_ATTRIBUTES = ("kind", "colour", "size", "position")


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median RGB of the image's outer frame, float32 [3]."""
    frame = np.concatenate(
        [
            image[:BORDER].reshape(-1, 3),
            image[-BORDER:].reshape(-1, 3),
            image[:, :BORDER].reshape(-1, 3),
            image[:, -BORDER:].reshape(-1, 3),
        ]
    )
    return np.median(frame.astype(np.float32), axis=0)


@dataclasses.dataclass(frozen=True)
class Blob:
    """One shape in an image: its pixels (boolean mask), its median colour, how much of
    that colour each pixel nearby holds (``coverage``, 0 = background) and where
    ``coverage`` belongs to this shape (``region``, inside the box ``window``)."""

    mask: np.ndarray
    rgb: np.ndarray
    coverage: np.ndarray
    region: np.ndarray
    window: tuple[slice, slice]  # bounding box of ``region``


def _refine(pixels: np.ndarray, background: np.ndarray, seed: np.ndarray) -> Blob:
    """Re-threshold around a detected region at half way between background and the
    region's own colour: where a blurred edge crosses half height is where the sharp
    edge was, whatever the colour's contrast."""
    core = ndimage.binary_erosion(seed, structure=np.ones((3, 3), bool))
    rgb = np.median(pixels[core if core.any() else seed], axis=0)
    direction = rgb - background
    coverage = (pixels - background) @ direction / max(float(direction @ direction), 1e-6)
    region = ndimage.binary_dilation(seed, iterations=3)
    mask = ndimage.binary_fill_holes((coverage >= 0.5) & region)
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
    window = ndimage.find_objects(region.astype(np.int8))[0]
    return Blob(mask, rgb, np.clip(coverage, 0.0, 1.0), region, window)


def find_blobs(image: np.ndarray) -> list[Blob]:
    """One blob per connected foreground region of at least MIN_AREA pixels."""
    pixels = image.astype(np.float32)
    background = background_colour(image)
    distance = np.linalg.norm(pixels - background, axis=-1)
    foreground = ndimage.binary_opening(distance > FOREGROUND_DISTANCE, structure=np.ones((3, 3), bool))
    labels, count = ndimage.label(foreground)
    seeds = [labels == index for index in range(1, count + 1)]
    return [_refine(pixels, background, seed) for seed in seeds if seed.sum() >= MIN_AREA]


def nearest_colour(rgb: np.ndarray) -> str:
    """Name of the palette colour nearest to an RGB triple."""
    return _PALETTE_NAMES[int(np.argmin(np.linalg.norm(_PALETTE - rgb, axis=-1)))]


@dataclasses.dataclass(frozen=True)
class _KindGeometry:
    fill: float  # area as a fraction of the shape's box
    centroid: tuple[float, float]  # (v, u) centroid in box coordinates


def _kind_geometry(kind: str, samples: int = 512) -> _KindGeometry:
    coords = (np.arange(samples) + 0.5) / samples * 2.0 - 1.0
    v, u = np.meshgrid(coords, coords, indexing="ij")
    inside = kind_mask(kind, u, v)
    return _KindGeometry(float(inside.mean()), (float(v[inside].mean()), float(u[inside].mean())))


_GEOMETRY = {kind: _kind_geometry(kind) for kind in KINDS}


# Blurs tried on each template: generated images and reconstructions have soft edges.
_TEMPLATE_BLURS = (0.0, 0.75, 1.5)
_SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class KindFit:
    """A kind's mask placed to match a blob's area and centroid, and how far the blob's
    coverage is from it (mean squared difference near the blob, best over blurs)."""

    kind: str
    centre: tuple[float, float]
    side: float
    error: float


def _area_template(
    kind: str, centre: tuple[float, float], side: float, canvas: tuple[int, int]
) -> np.ndarray:
    """The fraction of each pixel a shape covers."""
    fine = shape_mask(
        kind,
        (centre[0] * _SUPERSAMPLE, centre[1] * _SUPERSAMPLE),
        side * _SUPERSAMPLE,
        canvas=(canvas[0] * _SUPERSAMPLE, canvas[1] * _SUPERSAMPLE),
    )
    return fine.reshape(canvas[0], _SUPERSAMPLE, canvas[1], _SUPERSAMPLE).mean(axis=(1, 3))


def fit_kind(blob: Blob, kind: str) -> KindFit:
    """Place ``kind`` with the blob's area and centroid and measure the misfit."""
    geometry = _GEOMETRY[kind]
    rows, cols = np.nonzero(blob.mask)
    side = float(np.sqrt(rows.size / geometry.fill))
    centre = (
        rows.mean() + 0.5 - geometry.centroid[0] * side / 2.0,
        cols.mean() + 0.5 - geometry.centroid[1] * side / 2.0,
    )
    window_rows, window_cols = blob.window
    corner = (window_rows.start, window_cols.start)
    window_shape = (window_rows.stop - window_rows.start, window_cols.stop - window_cols.start)
    template = _area_template(kind, (centre[0] - corner[0], centre[1] - corner[1]), side, window_shape)
    region = blob.region[window_rows, window_cols]
    target = blob.coverage[window_rows, window_cols][region]
    error = min(
        _scaled_misfit(ndimage.gaussian_filter(template, sigma, mode="constant")[region], target)
        for sigma in _TEMPLATE_BLURS
    )
    return KindFit(kind, centre, side, error)


def _scaled_misfit(template: np.ndarray, target: np.ndarray) -> float:
    """Mean squared difference after scaling the template to the target: blur and
    reconstruction dim small shapes, so their centres no longer reach full colour."""
    scale = float(template @ target) / max(float(template @ template), 1e-6)
    return float(np.mean((scale * template - target) ** 2))


def _nearest_grid_index(coordinate: float, length: int) -> int:
    return int(np.argmin([abs(coordinate - c) for c in grid_centres(length)]))


def read_shape(blob: Blob) -> Shape:
    """The shape a blob shows: the best fitting kind gives the kind, and its box gives
    size and position on the blob's canvas."""
    best = min((fit_kind(blob, kind) for kind in KINDS), key=lambda fit: fit.error)
    height, width = blob.mask.shape
    cell = (_nearest_grid_index(best.centre[0], height), _nearest_grid_index(best.centre[1], width))
    return Shape(
        kind=best.kind,
        colour=nearest_colour(blob.rgb),
        size="large" if best.side > _SIZE_THRESHOLD else "small",
        position=_POSITION_BY_CELL[cell],
    )


def read_scene(image: np.ndarray) -> Scene:
    """The scene a uint8 [height, width, 3] image shows, as far as pixel analysis can tell;
    its canvas is the image's size."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [height, width, 3], got shape {image.shape}")
    canvas = check_canvas(image.shape[:2])
    return Scene(tuple(read_shape(blob) for blob in find_blobs(image)), canvas)


def t2i_accuracy(prompt_scenes: Sequence[Scene], images: Sequence[np.ndarray]) -> float:
    """Fraction of generated images in which every attribute of every prompted shape is
    recovered, and no extra shape is seen."""
    _check_lengths(prompt_scenes, images)
    return float(np.mean([read_scene(img) == scene for scene, img in zip(prompt_scenes, images)]))


def caption_accuracy(true_scenes: Sequence[Scene], captions: Sequence[str]) -> float:
    """Fraction of captions that parse to exactly the scene the image shows (on the image's
    canvas: a caption does not state it)."""
    _check_lengths(true_scenes, captions)
    return float(np.mean([parse_caption(c, scene.canvas) == scene for scene, c in zip(true_scenes, captions)]))


def qa_accuracy(answers: Sequence[str], predictions: Sequence[str]) -> float:
    """Fraction of predicted answers equal to the expected ones, ignoring case,
    whitespace and a final full stop."""
    _check_lengths(answers, predictions)

    def normal(text: str) -> str:
        return " ".join(text.lower().split()).rstrip(" .")

    return float(np.mean([normal(a) == normal(p) for a, p in zip(answers, predictions)]))


def _matched_attributes(truth: Scene, found: Scene | None) -> dict[str, int]:
    """Per attribute, how many true shapes the best pairing with found shapes gets right."""
    if found is None or not found.shapes:
        return dict.fromkeys(_ATTRIBUTES, 0)
    best = None
    paired = min(len(found.shapes), len(truth.shapes))
    for chosen, order in itertools.product(
        itertools.combinations(truth.shapes, paired), itertools.permutations(found.shapes, paired)
    ):
        hits = {a: sum(getattr(t, a) == getattr(f, a) for t, f in zip(chosen, order)) for a in _ATTRIBUTES}
        if best is None or sum(hits.values()) > sum(best.values()):
            best = hits
    return best


def attribute_accuracy(
    true_scenes: Sequence[Scene], found_scenes: Sequence[Scene | None]
) -> dict[str, float]:
    """Accuracy of each attribute over all true shapes, plus shape count and whole scene.

    ``found_scenes`` are what images or captions show (None for an unreadable caption);
    true and found shapes are paired so as to agree on the most attributes.
    """
    _check_lengths(true_scenes, found_scenes)
    totals = dict.fromkeys(_ATTRIBUTES, 0)
    for truth, found in zip(true_scenes, found_scenes):
        for attribute, hits in _matched_attributes(truth, found).items():
            totals[attribute] += hits
    shapes = sum(len(s.shapes) for s in true_scenes)
    result = {a: totals[a] / shapes for a in _ATTRIBUTES}
    pairs = list(zip(true_scenes, found_scenes))
    result["count"] = float(np.mean([f is not None and len(f.shapes) == len(t.shapes) for t, f in pairs]))
    result["scene"] = float(np.mean([f == t for t, f in pairs]))
    return result


def _check_lengths(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"got {len(a)} references but {len(b)} items to score")
    if not a:
        raise ValueError("nothing to score")
