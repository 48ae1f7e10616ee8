"""The shapes world's language: every scene's one canonical caption, the parser that turns
a caption back into its scene, and question/answer pairs about a scene."""

from __future__ import annotations

import re

from liquid_jax.shapes.world import CANVAS, COLOURS, DEFAULT_WORLD, KINDS, POSITIONS, SIZES, Scene, Shape, World


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
