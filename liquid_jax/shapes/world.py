"""The shapes world's scenes: what a scene is, which scenes a world allows, how one is drawn
and how scenes are sampled.

A scene holds one or two flat shapes on a black canvas, 64x64 pixels unless the world
has other canvases too (any sides that are multiples of 32 from 64 up). Each shape has a
kind, a colour, a size and a position on a 3x3 grid spread over the canvas.
A :class:`World` picks which attribute values are in play and which (colour, kind)
pairs are held out: those never appear in training scenes or in the text corpus,
although every word of their captions does.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

IMAGE_SIZE = 64
CANVAS = (IMAGE_SIZE, IMAGE_SIZE)  # (height, width) of the default canvas
BACKGROUND_RGB = (0, 0, 0)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (40, 190, 60),
    "blue": (40, 90, 240),
    "yellow": (245, 235, 50),
    "purple": (160, 60, 220),
    "orange": (255, 150, 0),
    "white": (245, 245, 245),
}
KINDS = ("circle", "square", "triangle", "diamond", "cross")
# Side of a shape's bounding square in pixels.
SIZES: dict[str, int] = {"small": 18, "large": 24}
# The outer grid rows and columns are centred this far from the canvas edge, the middle ones
# in the middle. On sides that are multiples of 32 every centre is a multiple of 16, so a
# shape covers the same pixels of its 16x16 (8x8, 4x4) patches wherever it sits: a
# patch-based image tokenizer sees one pattern per shape, moved by whole patches.
GRID_MARGIN = 16


def grid_centres(length: int) -> tuple[float, float, float]:
    """Pixel centres of the three grid rows (or columns) across ``length`` pixels."""
    return float(GRID_MARGIN), length / 2.0, float(length - GRID_MARGIN)


def check_canvas(canvas: Sequence[int]) -> tuple[int, int]:
    """``canvas`` as a (height, width) tuple; raises ValueError unless both sides are
    multiples of 32 from 64 up."""
    canvas = tuple(int(x) for x in canvas)
    if len(canvas) != 2 or any(x < 64 or x % 32 for x in canvas):
        raise ValueError(f"canvas {canvas} must be (height, width) with sides multiples of 32 from 64 up")
    return canvas


def canvas_name(canvas: tuple[int, int]) -> str:
    """(height, width) -> "WxH", the order of the size prefix ("Width is .. Height is ..")."""
    return f"{canvas[1]}x{canvas[0]}"


GRID_CENTRES = grid_centres(IMAGE_SIZE)
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (0, 1),
    "top right": (0, 2),
    "left": (1, 0),
    "center": (1, 1),
    "right": (1, 2),
    "bottom left": (2, 0),
    "bottom": (2, 1),
    "bottom right": (2, 2),
}
# Shapes of one scene sit at least two grid steps apart (rows or columns), so even two
# large shapes leave a gap of several pixels between them.
MIN_GRID_DISTANCE = 2


@dataclasses.dataclass(frozen=True, order=True)
class Shape:
    """One flat shape: ``kind`` in KINDS, ``colour`` in COLOURS, ``size`` in SIZES,
    ``position`` in POSITIONS."""

    kind: str
    colour: str
    size: str
    position: str


def _reading_order(shape: Shape) -> tuple:
    return (POSITIONS.get(shape.position, (9, 9)), shape)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Shapes on a canvas of (height, width) pixels, kept in reading order (top to bottom,
    left to right) so that two scenes with the same shapes compare equal."""

    shapes: tuple[Shape, ...]
    canvas: tuple[int, int] = CANVAS

    def __post_init__(self):
        object.__setattr__(self, "shapes", tuple(sorted(self.shapes, key=_reading_order)))
        object.__setattr__(self, "canvas", check_canvas(self.canvas))


def _grid_distance(a: str, b: str) -> int:
    (ra, ca), (rb, cb) = POSITIONS[a], POSITIONS[b]
    return max(abs(ra - rb), abs(ca - cb))


@dataclasses.dataclass(frozen=True)
class World:
    """Which attribute values scenes use, and the (colour, kind) pairs kept for evaluation.

    Held-out pairs naming a colour or kind the world does not use are dropped.
    """

    kinds: tuple[str, ...] = KINDS
    colours: tuple[str, ...] = tuple(COLOURS)
    sizes: tuple[str, ...] = tuple(SIZES)
    positions: tuple[str, ...] = tuple(POSITIONS)
    heldout_pairs: tuple[tuple[str, str], ...] = (
        ("red", "triangle"),
        ("green", "square"),
        ("blue", "circle"),
        ("yellow", "cross"),
        ("purple", "diamond"),
    )
    two_shape_fraction: float = 0.5
    canvases: tuple[tuple[int, int], ...] = (CANVAS,)

    def __post_init__(self):
        # Tuples even when built from config lists, so that worlds hash and compare.
        vocabulary = {"kinds": KINDS, "colours": COLOURS, "sizes": SIZES, "positions": POSITIONS}
        for field, known in vocabulary.items():
            values = tuple(getattr(self, field))
            if not values or set(values) - set(known):
                raise ValueError(f"World {field} {values} must be a non-empty subset of {tuple(known)}")
            object.__setattr__(self, field, values)
        pairs = tuple((c, k) for c, k in self.heldout_pairs if c in self.colours and k in self.kinds)
        object.__setattr__(self, "heldout_pairs", pairs)
        if len(pairs) == len(self.colours) * len(self.kinds):
            raise ValueError("every (colour, kind) pair is held out: nothing left to train on")
        if not self.canvases:
            raise ValueError("a world needs at least one canvas")
        object.__setattr__(self, "canvases", tuple(check_canvas(c) for c in self.canvases))
        if not 0.0 <= self.two_shape_fraction <= 1.0:
            raise ValueError(f"two_shape_fraction must be in [0, 1], got {self.two_shape_fraction}")
        if self.two_shape_fraction > 0 and not self.position_pairs:
            raise ValueError(f"no two of the positions {self.positions} are far enough apart for two shapes")

    @property
    def position_pairs(self) -> tuple[tuple[str, str], ...]:
        """Positions two shapes of one scene may take."""
        return tuple(
            (a, b)
            for i, a in enumerate(self.positions)
            for b in self.positions[i + 1 :]
            if _grid_distance(a, b) >= MIN_GRID_DISTANCE
        )

    def is_heldout(self, shape: Shape) -> bool:
        return (shape.colour, shape.kind) in self.heldout_pairs


DEFAULT_WORLD = World()
# A smaller world for quick runs: fewer kinds and colours, mostly single shapes.
EASY_WORLD = World(
    kinds=("circle", "square", "triangle"),
    colours=("red", "green", "blue", "yellow"),
    two_shape_fraction=0.25,
)


# ---------------------------------------------------------------------------
# Rendering


def kind_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which points (u across, v down; the box a shape fills is [-1, 1]^2) lie inside
    a shape of ``kind``. The triangle points up."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if kind == "triangle":
        return (np.abs(u) <= (v + 1.0) / 2.0) & (v <= 1.0)
    if kind == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if kind == "cross":
        inside_box = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
        return inside_box & ((np.abs(u) <= 1.0 / 3.0) | (np.abs(v) <= 1.0 / 3.0))
    raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")


def shape_mask(
    kind: str, centre: tuple[float, float], side: float, canvas: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)
) -> np.ndarray:
    """Boolean mask, ``canvas`` (height, width) pixels, of a shape whose box has this
    (row, column) centre and side, both in pixels, sampled at pixel centres."""
    v = (np.arange(canvas[0])[:, None] + 0.5 - centre[0]) / (side / 2.0)
    u = (np.arange(canvas[1])[None, :] + 0.5 - centre[1]) / (side / 2.0)
    return kind_mask(kind, u, v)


def shape_centre(shape: Shape, canvas: tuple[int, int] = CANVAS) -> tuple[float, float]:
    """(row, column) pixel centre of the box a shape is drawn in."""
    row, col = POSITIONS[shape.position]
    return grid_centres(canvas[0])[row], grid_centres(canvas[1])[col]


def render(scene: Scene) -> np.ndarray:
    """The scene as a uint8 [height, width, 3] image of its canvas."""
    image = np.empty((*scene.canvas, 3), np.uint8)
    image[:] = BACKGROUND_RGB
    for shape in scene.shapes:
        mask = shape_mask(shape.kind, shape_centre(shape, scene.canvas), SIZES[shape.size], scene.canvas)
        image[mask] = COLOURS[shape.colour]
    return image


# ---------------------------------------------------------------------------
# Sampling


def choice(rng: np.random.Generator, items: Sequence) -> Any:
    """One of ``items``, drawn with one integer from ``rng``."""
    return items[int(rng.integers(len(items)))]


def random_shape(rng: np.random.Generator, world: World, position: str) -> Shape:
    """A shape at ``position`` of any kind, colour and size the world uses."""
    return Shape(
        kind=choice(rng, world.kinds),
        colour=choice(rng, world.colours),
        size=choice(rng, world.sizes),
        position=position,
    )


def _random_positions(rng: np.random.Generator, world: World, count: int) -> list[str]:
    if count == 1:
        return [choice(rng, world.positions)]
    return list(choice(rng, world.position_pairs))


def _in_split(scene: Scene, split: str, world: World) -> bool:
    heldout = any(world.is_heldout(s) for s in scene.shapes)
    if split == "train":
        return not heldout
    if split == "heldout":
        return heldout
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")


_CANVAS_STREAM = 7


def random_scene(rng: np.random.Generator, world: World, split: str) -> Scene:
    """A scene on the default canvas of ``split`` ("train" or "heldout", see ``sample_scenes``)."""
    while True:
        count = 2 if rng.random() < world.two_shape_fraction else 1
        positions = _random_positions(rng, world, count)
        scene = Scene(tuple(random_shape(rng, world, p) for p in positions))
        if _in_split(scene, split, world):
            return scene


def sample_scenes(n: int, split: str = "train", seed: int = 0, world: World = DEFAULT_WORLD) -> list[Scene]:
    """``n`` random scenes of one split: "train" scenes use no held-out (colour, kind) pair,
    "heldout" scenes use at least one. The same seed gives the same scenes."""
    if split == "heldout" and not world.heldout_pairs:
        raise ValueError("this world holds nothing out")
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, world, split) for _ in range(n)]
    if len(world.canvases) == 1:
        return [dataclasses.replace(s, canvas=world.canvases[0]) for s in scenes]
    # Canvases come from a stream of their own: the shapes are those of a one-canvas world.
    canvas_rng = np.random.default_rng([seed, _CANVAS_STREAM])
    return [dataclasses.replace(s, canvas=choice(canvas_rng, world.canvases)) for s in scenes]
