"""The shapes world: a procedural image + text domain small enough to learn on a laptop.

A scene holds one or two flat shapes on a black canvas, 64x64 pixels unless the world
has other canvases too (any sides that are multiples of 32 from 64 up). Each shape has a
kind, a colour, a size and a position on a 3x3 grid spread over the canvas. Every scene has one canonical caption,
which :func:`parse_caption` turns back into the scene, and question/answer pairs.
A :class:`World` picks which attribute values are in play and which (colour, kind)
pairs are held out: those never appear in training scenes or in the text corpus,
although every word of their captions does.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Sequence

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
# Captions


def describe(shape: Shape) -> str:
    """``"a large red circle at the top left"``."""
    return f"a {shape.size} {shape.colour} {shape.kind} at the {shape.position}"


def caption(scene: Scene) -> str:
    """The canonical caption: shape descriptions in reading order joined by "and"."""
    return " and ".join(describe(s) for s in scene.shapes) + "."


_DESCRIPTION = re.compile(
    r"an? (?P<size>{}) (?P<colour>{}) (?P<kind>{}) at the (?P<position>{})".format(
        *("|".join(sorted(names, key=len, reverse=True)) for names in (SIZES, COLOURS, KINDS, POSITIONS))
    )
)


def parse_caption(text: str, canvas: tuple[int, int] = CANVAS) -> Scene | None:
    """The scene on ``canvas`` a caption describes, or None if it is not a caption of this
    world. Case, extra whitespace and the final full stop do not matter.
    """
    normal = " ".join(text.lower().split()).rstrip(" .")
    if not normal:
        return None
    shapes = []
    for part in normal.split(" and "):
        match = _DESCRIPTION.fullmatch(part.strip())
        if match is None:
            return None
        shapes.append(Shape(**match.groupdict()))
    return Scene(tuple(shapes), canvas)


# ---------------------------------------------------------------------------
# Sampling


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _random_shape(rng: np.random.Generator, world: World, position: str) -> Shape:
    return Shape(
        kind=_choice(rng, world.kinds),
        colour=_choice(rng, world.colours),
        size=_choice(rng, world.sizes),
        position=position,
    )


def _random_positions(rng: np.random.Generator, world: World, count: int) -> list[str]:
    if count == 1:
        return [_choice(rng, world.positions)]
    return list(_choice(rng, world.position_pairs))


def _in_split(scene: Scene, split: str, world: World) -> bool:
    heldout = any(world.is_heldout(s) for s in scene.shapes)
    if split == "train":
        return not heldout
    if split == "heldout":
        return heldout
    raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")


_CANVAS_STREAM = 7


def _random_scene(rng: np.random.Generator, world: World, split: str) -> Scene:
    while True:
        count = 2 if rng.random() < world.two_shape_fraction else 1
        positions = _random_positions(rng, world, count)
        scene = Scene(tuple(_random_shape(rng, world, p) for p in positions))
        if _in_split(scene, split, world):
            return scene


def sample_scenes(n: int, split: str = "train", seed: int = 0, world: World = DEFAULT_WORLD) -> list[Scene]:
    """``n`` random scenes of one split: "train" scenes use no held-out (colour, kind) pair,
    "heldout" scenes use at least one. The same seed gives the same scenes."""
    if split == "heldout" and not world.heldout_pairs:
        raise ValueError("this world holds nothing out")
    rng = np.random.default_rng(seed)
    scenes = [_random_scene(rng, world, split) for _ in range(n)]
    if len(world.canvases) == 1:
        return [dataclasses.replace(s, canvas=world.canvases[0]) for s in scenes]
    # Canvases come from a stream of their own: the shapes are those of a one-canvas world.
    canvas_rng = np.random.default_rng([seed, _CANVAS_STREAM])
    return [dataclasses.replace(s, canvas=_choice(canvas_rng, world.canvases)) for s in scenes]


# ---------------------------------------------------------------------------
# Questions and answers

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def qa_pairs(scene: Scene, world: World = DEFAULT_WORLD) -> list[tuple[str, str]]:
    """(question, answer) pairs about a scene; only questions with one right answer."""
    pairs = [("How many shapes are there?", NUMBER_WORDS[len(scene.shapes)])]
    kinds = [s.kind for s in scene.shapes]
    names = [f"{s.colour} {s.kind}" for s in scene.shapes]
    for shape, name in zip(scene.shapes, names):
        if kinds.count(shape.kind) == 1:
            pairs.append((f"What colour is the {shape.kind}?", shape.colour))
        pairs.append((f"What shape is at the {shape.position}?", shape.kind))
        if names.count(name) == 1:
            pairs.append((f"Where is the {name}?", f"at the {shape.position}"))
            pairs.append((f"Is the {name} small or large?", shape.size))
    absent = [k for k in world.kinds if k not in kinds]
    pairs.append((f"Is there a {kinds[0]}?", "yes"))
    if absent:
        pairs.append((f"Is there a {absent[0]}?", "no"))
    return pairs


# ---------------------------------------------------------------------------
# Text corpus

_THINGS_BY_COLOUR = {
    "red": ("a tomato", "a strawberry", "a fire truck"),
    "green": ("a leaf", "a frog", "the grass"),
    "blue": ("the sky", "the sea", "a blueberry"),
    "yellow": ("a banana", "a lemon", "the sun"),
    "purple": ("a plum", "a grape", "a violet"),
    "orange": ("a carrot", "a pumpkin", "a tangerine"),
    "white": ("a cloud", "a snowball", "a swan"),
}
_KIND_FACTS = {
    "circle": ("a circle is round.", "a circle has no corners.", "a wheel looks like a circle."),
    "square": (
        "a square has four equal sides.",
        "a square has four corners.",
        "a window can look like a square.",
    ),
    "triangle": (
        "a triangle has three sides.",
        "a triangle has three corners.",
        "a roof can look like a triangle.",
    ),
    "diamond": (
        "a diamond is a square standing on one corner.",
        "a diamond has four corners.",
        "a kite can look like a diamond.",
    ),
    "cross": ("a cross is made of two bars.", "a cross looks like a plus sign.", "a cross has four arms."),
}
_PEOPLE = ("the cat", "a little girl", "my friend", "the old man", "the teacher", "a small dog", "the farmer")
_ACTIONS = ("sees", "likes", "finds", "draws", "paints", "carries", "wants", "looks at")
_OBJECTS = ("a book", "the ball", "a red apple", "the garden", "a big box", "the river", "the moon")
_PLACES = ("in the morning", "after school", "near the house", "at night", "in the park", "by the sea")
_FEELINGS = ("happy", "tired", "curious", "hungry", "calm", "excited")


def _train_shape(rng: np.random.Generator, world: World) -> Shape:
    while True:
        shape = _random_shape(rng, world, _choice(rng, world.positions))
        if not world.is_heldout(shape):
            return shape


def _description_text(rng: np.random.Generator, world: World) -> str:
    scene = _random_scene(rng, world, "train")
    lead = _choice(rng, ("", "there is ", "the picture shows ", "in this image we see ", "look: "))
    return lead + caption(scene)


def _fact_text(rng: np.random.Generator, world: World) -> str:
    colour = _choice(rng, world.colours)
    kind = _choice(rng, world.kinds)
    facts = (
        _choice(rng, _KIND_FACTS[kind]),
        f"{_choice(rng, _THINGS_BY_COLOUR[colour])} is {colour}.",
        f"{colour} is a colour and {kind} is a shape.",
        "a large shape is bigger than a small shape.",
        "the top is above the center and the center is above the bottom.",
        "the left is the opposite of the right.",
    )
    return _choice(rng, facts)


def _counting_text(rng: np.random.Generator, world: World) -> str:
    a, b = int(rng.integers(0, 6)), int(rng.integers(0, 5))
    start = int(rng.integers(1, 6))
    shapes = [_train_shape(rng, world) for _ in range(int(rng.integers(2, 4)))]
    listing = " and ".join(f"a {s.colour} {s.kind}" for s in shapes)
    texts = (
        f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}.",
        ", ".join(NUMBER_WORDS[start : start + 5]) + ".",
        f"there are {NUMBER_WORDS[len(shapes)]} shapes: {listing}.",
    )
    return _choice(rng, texts)


def _story_text(rng: np.random.Generator, world: World) -> str:
    hero, friend = _train_shape(rng, world), _train_shape(rng, world)
    return (
        f"once upon a time there was {describe(hero)}. "
        f"it felt {_choice(rng, _FEELINGS)}, so it went to visit {describe(friend)}. "
        f"the {hero.colour} {hero.kind} and the {friend.colour} {friend.kind} became good friends."
    )


def _question_text(rng: np.random.Generator, world: World) -> str:
    question, answer = _choice(rng, qa_pairs(_random_scene(rng, world, "train"), world))
    return f"question: {question} answer: {answer}."


def _everyday_text(rng: np.random.Generator, world: World) -> str:
    person = _choice(rng, _PEOPLE)
    sentence = f"{person} {_choice(rng, _ACTIONS)} {_choice(rng, _OBJECTS)} {_choice(rng, _PLACES)}."
    return sentence[0].upper() + sentence[1:]


_TEXT_KINDS: tuple[Callable[[np.random.Generator, World], str], ...] = (
    _description_text,
    _fact_text,
    _counting_text,
    _story_text,
    _question_text,
    _everyday_text,
)


def text_corpus(n: int, seed: int = 0, world: World = DEFAULT_WORLD) -> list[str]:
    """``n`` short text documents (one to three sentences) about the world and everyday
    life, for text-only pre-training. Held-out (colour, kind) pairs never appear."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        sentences = [_choice(rng, _TEXT_KINDS)(rng, world) for _ in range(int(rng.integers(1, 4)))]
        docs.append(" ".join(sentences))
    return docs
