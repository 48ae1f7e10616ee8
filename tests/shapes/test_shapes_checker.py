"""The shapes-world checker reads ground-truth renders, clean and degraded, back into scenes."""

import dataclasses
import io
import itertools

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from liquid_jax.shapes.captions import caption
from liquid_jax.shapes.checker import (
    attribute_accuracy,
    caption_accuracy,
    qa_accuracy,
    read_scene,
    t2i_accuracy,
)
from liquid_jax.shapes.world import (
    COLOURS,
    KINDS,
    POSITIONS,
    SIZES,
    Scene,
    Shape,
    World,
    render,
    sample_scenes,
)


def _noise(image, std, rng):
    return np.clip(image + rng.normal(0.0, std, image.shape), 0, 255).astype(np.uint8)


def _blur(image, sigma):
    blurred = ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
    return np.clip(blurred, 0, 255).astype(np.uint8)


def _jpeg(image, quality):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _warp(image, displacement_std, rng):
    """Bend the image with a smooth random displacement field (std in pixels)."""
    grid = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    coords = []
    for axis in grid:
        field = ndimage.gaussian_filter(rng.normal(size=image.shape[:2]), 6.0)
        coords.append(axis + field / field.std() * displacement_std)
    channels = [ndimage.map_coordinates(image[..., c].astype(np.float64), coords, order=1) for c in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def _scenes(n, seed):
    scenes = sample_scenes(n - n // 5, "train", seed=seed) + sample_scenes(n // 5, "heldout", seed=seed)
    assert {len(s.shapes) for s in scenes} == {1, 2}
    return scenes


@pytest.mark.parametrize("canvas", [(64, 64), (96, 64), (64, 128)])
def test_reads_every_single_shape_exactly(canvas):
    scenes = [
        Scene((Shape(*attributes),), canvas)
        for attributes in itertools.product(KINDS, COLOURS, SIZES, POSITIONS)
    ]
    wrong = [caption(s) for s in scenes if read_scene(render(s)) != s]
    assert not wrong, wrong[:5]


def test_other_canvases_spread_the_grid_and_are_read_back():
    world = World(canvases=((64, 64), (96, 64)))
    scenes = sample_scenes(200, "train", seed=5, world=world)
    one_canvas = sample_scenes(200, "train", seed=5)
    assert [s.shapes for s in scenes] == [s.shapes for s in one_canvas]
    assert {s.canvas for s in scenes} == {(64, 64), (96, 64)}
    tall = Scene((Shape("square", "red", "large", "bottom"),), (96, 64))
    rows = np.nonzero(render(tall)[..., 0])[0]
    assert (rows.min() + rows.max() + 1) / 2 == 80  # the bottom row's centre on a 96 px side
    assert t2i_accuracy(scenes, [render(s) for s in scenes]) == 1.0
    assert read_scene(render(tall)) != dataclasses.replace(tall, canvas=(64, 64))


def test_accuracy_on_clean_renders():
    scenes = _scenes(500, seed=11)
    accuracy = t2i_accuracy(scenes, [render(s) for s in scenes])
    print(f"checker accuracy, clean renders: {accuracy:.4f}")
    assert accuracy >= 0.98


@pytest.mark.parametrize(
    "name, degrade",
    [
        ("noise std 12", lambda im, rng: _noise(im, 12.0, rng)),
        ("blur sigma 1", lambda im, rng: _blur(im, 1.0)),
        ("jpeg quality 30", lambda im, rng: _jpeg(im, 30)),
        ("smooth warp 1 px", lambda im, rng: _warp(im, 1.0, rng)),
        ("blur 0.7 + noise 6 + jpeg 50", lambda im, rng: _jpeg(_noise(_blur(im, 0.7), 6.0, rng), 50)),
    ],
)
def test_accuracy_on_mildly_degraded_renders(name, degrade):
    rng = np.random.default_rng(0)
    scenes = _scenes(250, seed=12)
    images = [degrade(render(s), rng) for s in scenes]
    accuracy = t2i_accuracy(scenes, images)
    print(f"checker accuracy, {name}: {accuracy:.4f}")
    assert accuracy >= 0.98


def test_accuracy_on_strongly_degraded_renders():
    rng = np.random.default_rng(1)
    scenes = _scenes(150, seed=13)
    images = [_jpeg(_noise(_blur(render(s), 1.0), 8.0, rng), 40) for s in scenes]
    scores = attribute_accuracy(scenes, [read_scene(im) for im in images])
    print(f"checker, blur 1 + noise 8 + jpeg 40: {scores}")
    assert scores["scene"] >= 0.97
    assert min(scores["colour"], scores["size"], scores["position"], scores["count"]) >= 0.99


def test_background_other_than_black_and_specks():
    scene = Scene(
        (Shape("triangle", "green", "small", "top right"), Shape("cross", "white", "large", "bottom left"))
    )
    image = render(scene)
    background = (image == 0).all(-1)
    image[background] = (50, 45, 60)
    image[40:42, 40:42] = COLOURS["red"]  # a speck far smaller than any shape
    assert read_scene(image) == scene


def test_wrong_images_and_captions_score_zero():
    square = Shape("square", "purple", "small", "bottom left")
    scene = Scene((Shape("circle", "orange", "large", "top"), square))
    other = Scene((Shape("circle", "red", "large", "top"), square))
    extra = Scene(scene.shapes + (Shape("diamond", "white", "small", "bottom right"),))
    images = [render(scene), render(other), render(extra)]
    assert t2i_accuracy([scene] * 3, images) == pytest.approx(1 / 3)
    assert t2i_accuracy([scene], [np.zeros((64, 64, 3), np.uint8)]) == 0.0
    captions = [caption(scene), caption(other), "a circle.", caption(scene).upper()]
    assert caption_accuracy([scene] * 4, captions) == pytest.approx(0.5)


@pytest.mark.parametrize("canvas", [(64, 64), (64, 96), (96, 64)])
def test_a_right_caption_scores_on_any_canvas(canvas):
    scene = Scene((Shape("circle", "orange", "large", "top left"), Shape("square", "red", "small", "right")), canvas)
    assert caption_accuracy([scene, scene], [caption(scene), caption(Scene(scene.shapes[:1], canvas))]) == 0.5


def test_attribute_accuracy_pairs_shapes_and_counts_each_attribute():
    square = Shape("square", "blue", "small", "bottom right")
    truth = Scene((Shape("circle", "red", "large", "top left"), square))
    wrong_kind = Shape("triangle", "blue", "small", "bottom right")
    found = Scene((Shape("circle", "red", "small", "top left"), wrong_kind))
    single = Scene((square,))
    scores = attribute_accuracy([truth, truth, truth, truth], [truth, found, single, None])
    assert scores["kind"] == pytest.approx((2 + 1 + 1 + 0) / 8)
    assert scores["size"] == pytest.approx((2 + 1 + 1 + 0) / 8)
    assert scores["colour"] == pytest.approx((2 + 2 + 1 + 0) / 8)
    assert scores["position"] == pytest.approx((2 + 2 + 1 + 0) / 8)
    assert scores["count"] == pytest.approx(2 / 4)
    assert scores["scene"] == pytest.approx(1 / 4)


def test_qa_accuracy_normalises_answers():
    predictions = [" Red.", "at the  top left", "three"]
    assert qa_accuracy(["red", "at the top left", "two"], predictions) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        qa_accuracy(["red"], [])


def test_rejects_images_of_another_size():
    with pytest.raises(ValueError):
        read_scene(np.zeros((32, 32, 3), np.uint8))
