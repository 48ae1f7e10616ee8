"""The shapes world's text-only corpus: short documents about the world (descriptions, facts,
counting, stories, questions) and everyday life, for pre-training the base language model."""

from __future__ import annotations

from typing import Callable

import numpy as np

from liquid_jax.shapes.captions import NUMBER_WORDS, caption, describe, qa_pairs
from liquid_jax.shapes.world import DEFAULT_WORLD, Shape, World, choice, random_scene, random_shape

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
        shape = random_shape(rng, world, choice(rng, world.positions))
        if not world.is_heldout(shape):
            return shape


def _description_text(rng: np.random.Generator, world: World) -> str:
    scene = random_scene(rng, world, "train")
    lead = choice(rng, ("", "there is ", "the picture shows ", "in this image we see ", "look: "))
    return lead + caption(scene)


def _fact_text(rng: np.random.Generator, world: World) -> str:
    colour = choice(rng, world.colours)
    kind = choice(rng, world.kinds)
    facts = (
        choice(rng, _KIND_FACTS[kind]),
        f"{choice(rng, _THINGS_BY_COLOUR[colour])} is {colour}.",
        f"{colour} is a colour and {kind} is a shape.",
        "a large shape is bigger than a small shape.",
        "the top is above the center and the center is above the bottom.",
        "the left is the opposite of the right.",
    )
    return choice(rng, facts)


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
    return choice(rng, texts)


def _story_text(rng: np.random.Generator, world: World) -> str:
    hero, friend = _train_shape(rng, world), _train_shape(rng, world)
    return (
        f"once upon a time there was {describe(hero)}. "
        f"it felt {choice(rng, _FEELINGS)}, so it went to visit {describe(friend)}. "
        f"the {hero.colour} {hero.kind} and the {friend.colour} {friend.kind} became good friends."
    )


def _question_text(rng: np.random.Generator, world: World) -> str:
    question, answer = choice(rng, qa_pairs(random_scene(rng, world, "train"), world))
    return f"question: {question} answer: {answer}."


def _everyday_text(rng: np.random.Generator, world: World) -> str:
    person = choice(rng, _PEOPLE)
    sentence = f"{person} {choice(rng, _ACTIONS)} {choice(rng, _OBJECTS)} {choice(rng, _PLACES)}."
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
        sentences = [choice(rng, _TEXT_KINDS)(rng, world) for _ in range(int(rng.integers(1, 4)))]
        docs.append(" ".join(sentences))
    return docs
