"""The shapes world: rendering geometry, captions and their parser, splits, QA, corpus."""

import itertools
import re

import numpy as np
import pytest
from scipy import ndimage

from liquid_jax.shapes import world as world_lib
from liquid_jax.shapes.captions import caption, parse_caption, qa_pairs
from liquid_jax.shapes.corpus import text_corpus
from liquid_jax.shapes.world import (
    COLOURS,
    GRID_CENTRES,
    KINDS,
    POSITIONS,
    SIZES,
    Scene,
    Shape,
    World,
    render,
    sample_scenes,
)


def _one(kind="square", colour="red", size="large", position="center"):
    return Scene((Shape(kind, colour, size, position),))


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("position", list(POSITIONS))
def test_square_fills_exactly_its_box(size, position):
    image = render(_one("square", "blue", size, position))
    side = SIZES[size]
    row, col = POSITIONS[position]
    top, left = int(GRID_CENTRES[row] - side / 2), int(GRID_CENTRES[col] - side / 2)
    expected = np.zeros((64, 64, 3), np.uint8)
    expected[top : top + side, left : left + side] = COLOURS["blue"]
    np.testing.assert_array_equal(image, expected)


def test_kind_areas_match_their_geometry():
    side = SIZES["large"]
    exact = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9}
    for kind in KINDS:
        pixels = (render(_one(kind, "white")) != 0).any(-1).sum()
        assert abs(pixels / side**2 - exact[kind]) < 0.05, kind


def test_triangle_points_up_and_circle_is_round():
    triangle = (render(_one("triangle")) != 0).any(-1)
    rows = np.nonzero(triangle.any(1))[0]
    widths = triangle.sum(1)[rows]
    assert np.all(np.diff(widths) >= 0) and widths[-1] == SIZES["large"] and widths[0] <= 2
    circle = (render(_one("circle")) != 0).any(-1)
    ys, xs = np.nonzero(circle)
    radius = np.hypot(ys + 0.5 - 32, xs + 0.5 - 32)
    assert radius.max() <= SIZES["large"] / 2


def test_two_shape_scenes_keep_shapes_apart():
    two_shape = [scene for scene in sample_scenes(300, seed=3) if len(scene.shapes) == 2]
    assert two_shape
    for scene in two_shape:
        a, b = (render(Scene((s,))).any(-1) for s in scene.shapes)
        steps_from_a = ndimage.distance_transform_cdt(~a, metric="chessboard")
        assert steps_from_a[b].min() - 1 >= 8, caption(scene)
        np.testing.assert_array_equal(render(scene).any(-1), a | b)


def test_background_and_palette_are_distinct():
    colours = np.array(list(COLOURS.values()) + [world_lib.BACKGROUND_RGB], float)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert distances[~np.eye(len(colours), dtype=bool)].min() > 80


def test_caption_text_and_order():
    scene = Scene(
        (Shape("triangle", "yellow", "large", "right"), Shape("square", "blue", "small", "left"))
    )
    assert caption(_one("circle", "red", "large", "top left")) == "a large red circle at the top left."
    assert caption(scene) == "a small blue square at the left and a large yellow triangle at the right."


def test_parse_caption_inverts_caption_for_every_single_shape():
    for kind, colour, size, position in itertools.product(KINDS, COLOURS, SIZES, POSITIONS):
        scene = _one(kind, colour, size, position)
        assert parse_caption(caption(scene)) == scene


def test_parse_caption_inverts_caption_for_sampled_scenes():
    for scene in sample_scenes(200, seed=1) + sample_scenes(50, "heldout", seed=1):
        assert parse_caption(caption(scene)) == scene


def test_parse_caption_tolerates_case_and_whitespace_but_not_garbage():
    scene = parse_caption("  A Large   RED circle at the top left\n and a small blue square at the bottom ")
    assert scene == Scene(
        (Shape("circle", "red", "large", "top left"), Shape("square", "blue", "small", "bottom"))
    )
    for garbage in ("", "a large red circle", "hello world.", "a huge red circle at the top.",
                    "a large red circle at the top and", "a large pink circle at the top.",
                    "a large red circle at the top. a small red circle at the left."):
        assert parse_caption(garbage) is None, garbage


def test_sampling_is_deterministic_and_seed_dependent():
    assert sample_scenes(20, seed=7) == sample_scenes(20, seed=7)
    assert sample_scenes(20, seed=7) != sample_scenes(20, seed=8)
    assert text_corpus(10, seed=2) == text_corpus(10, seed=2)


def test_splits_partition_the_heldout_pairs():
    world = world_lib.DEFAULT_WORLD
    train = sample_scenes(1000, "train", seed=0)
    heldout = sample_scenes(300, "heldout", seed=0)
    assert not any(world.is_heldout(s) for scene in train for s in scene.shapes)
    assert all(any(world.is_heldout(s) for s in scene.shapes) for scene in heldout)
    # Every word of a held-out caption is still seen in training captions.
    train_words = set(" ".join(caption(s) for s in train).replace(".", "").split())
    heldout_words = set(" ".join(caption(s) for s in heldout).replace(".", "").split())
    assert heldout_words <= train_words
    # Training covers every other (colour, kind) pair, both shape counts, every position.
    pairs = {(s.colour, s.kind) for scene in train for s in scene.shapes}
    assert pairs == set(itertools.product(COLOURS, KINDS)) - set(world.heldout_pairs)
    assert {len(s.shapes) for s in train} == {1, 2}
    assert {s.position for scene in train for s in scene.shapes} == set(POSITIONS)


def test_world_subset():
    world = World(kinds=("circle", "square"), colours=("red", "blue"), heldout_pairs=(("red", "square"),))
    scenes = sample_scenes(100, seed=0, world=world)
    assert {s.kind for sc in scenes for s in sc.shapes} == {"circle", "square"}
    assert ("red", "square") not in {(s.colour, s.kind) for sc in scenes for s in sc.shapes}
    easy = world_lib.EASY_WORLD
    assert easy.heldout_pairs == (("red", "triangle"), ("green", "square"), ("blue", "circle"))
    easy_scenes = sample_scenes(200, seed=0, world=easy)
    assert {s.colour for sc in easy_scenes for s in sc.shapes} == set(easy.colours)
    assert 0.15 < np.mean([len(sc.shapes) == 2 for sc in easy_scenes]) < 0.35
    assert World(heldout_pairs=(("pink", "circle"),)).heldout_pairs == ()
    with pytest.raises(ValueError):
        World(kinds=("hexagon",))
    with pytest.raises(ValueError):
        World(positions=("top left", "top"))
    with pytest.raises(ValueError):
        World(two_shape_fraction=1.5)
    with pytest.raises(ValueError):
        sample_scenes(1, "validation")


def test_qa_pairs_answer_from_the_scene():
    scene = Scene((Shape("circle", "red", "large", "top left"), Shape("square", "blue", "small", "bottom")))
    qa = dict(qa_pairs(scene))
    assert qa["How many shapes are there?"] == "two"
    assert qa["What colour is the circle?"] == "red"
    assert qa["What colour is the square?"] == "blue"
    assert qa["What shape is at the bottom?"] == "square"
    assert qa["Where is the red circle?"] == "at the top left"
    assert qa["Is the blue square small or large?"] == "small"
    assert qa["Is there a circle?"] == "yes"
    assert qa["Is there a triangle?"] == "no"


def test_qa_pairs_skip_ambiguous_questions():
    scene = Scene((Shape("circle", "red", "large", "top left"), Shape("circle", "red", "small", "bottom")))
    questions = [q for q, _ in qa_pairs(scene)]
    assert "What colour is the circle?" not in questions
    assert "Where is the red circle?" not in questions
    assert len(questions) == len(set(questions))


def test_text_corpus_covers_the_world_without_heldout_pairs():
    world = world_lib.DEFAULT_WORLD
    docs = text_corpus(2000, seed=0)
    text = " ".join(docs).lower()
    assert len(docs) == 2000 and all(d.strip() for d in docs)
    for colour, kind in world.heldout_pairs:
        assert not re.search(rf"\b{colour} {kind}\b", text), (colour, kind)
    words = set(re.findall(r"[a-z]+", text))
    assert set(KINDS) | set(COLOURS) | set(SIZES) <= words
    assert {"question", "answer", "once", "plus"} <= words
    assert "there are one" not in text and "there are two shapes:" in text
    # Every caption word (the vocabulary of held-out prompts too) is in the corpus.
    assert set(" ".join(POSITIONS).split()) <= words
