"""The evaluation report writes valid JSON, PNGs with the right content and an HTML page
that links only files which exist."""

import json
import os
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from liquid_jax.eval.report import Curves, ImageGrid, plot_curves, save_image_grid, write_report


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _solid(rgb, size=8):
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = rgb
    return image


@pytest.fixture
def metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step in range(0, 50, 5):
            f.write(json.dumps({"step": step, "loss": 5.0 / (step + 1), "lr": 1e-3}) + "\n")
        f.write("\n")
    return str(path)


def test_write_report(tmp_path, metrics_file):
    out = tmp_path / "report"
    images = [_solid((255, 0, 0)), _solid((0, 0, 255))]
    grid = ImageGrid("samples", images, ["red <one>", "blue & two"], columns=2)
    written = write_report(
        str(out),
        title="Shapes <demo>",
        metrics={"t2i_accuracy": np.float32(0.75), "steps": np.int64(100), "fid": float("nan")},
        tables={
            "per attribute": [
                {"attribute": "kind", "accuracy": 0.5},
                {"attribute": "colour", "accuracy": 1.0},
            ]
        },
        grids=[grid],
        curves=[Curves("training", metrics_file, keys=("loss", "missing"))],
    )
    with open(out / "report.json") as f:
        report = json.load(f)
    assert report["metrics"] == {"t2i_accuracy": 0.75, "steps": 100, "fid": None}
    assert report["tables"]["per attribute"][1] == {"attribute": "colour", "accuracy": 1.0}
    assert report["curves"] == {"training": ["loss"]}
    assert set(written) == {"json", "html", "samples", "training"}

    parser = _Links()
    with open(out / "report.html") as f:
        page = f.read()
    parser.feed(page)
    assert sorted(parser.images) == ["samples.png", "training.png"]
    for src in parser.images:
        assert not os.path.isabs(src)
        with Image.open(out / src) as image:
            image.verify()
    text = " ".join(parser.text)
    assert "Shapes <demo>" in text and "t2i_accuracy" in text and "colour" in text
    assert "<demo>" not in page and "&lt;demo&gt;" in page


def test_image_grid_places_images_and_captions(tmp_path):
    path = str(tmp_path / "grid.png")
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    save_image_grid(path, [_solid(c) for c in colours], ["a", "b", "a long caption " * 4], columns=2, scale=3)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    # Each image appears enlarged 3x: a solid 24x24 block of its colour.
    for colour in colours:
        hits = np.all(sheet == colour, axis=-1)
        rows, cols = np.nonzero(hits)
        assert hits.sum() == 24 * 24
        assert rows.max() - rows.min() == 23 and cols.max() - cols.min() == 23
    # Two columns: red and green side by side, blue below red.
    red, green, blue = (np.argwhere(np.all(sheet == c, axis=-1)).min(0) for c in colours)
    assert red[0] == green[0] and green[1] > red[1]
    assert blue[1] == red[1] and blue[0] > red[0]
    # Each caption is drawn in dark ink below its image, inside its own cell.
    for top, left in (red, green, blue):
        below = sheet[top + 24 : top + 60, left : left + 60]
        assert (below.max(-1) < 100).sum() > 5
    assert (sheet[: red[0] + 24].max(-1) < 100).sum() == 0
    with pytest.raises(ValueError):
        save_image_grid(path, [_solid((0, 0, 0))], [])
    with pytest.raises(ValueError):
        save_image_grid(path, [np.zeros((4, 4, 3), np.float32)], ["x"])


def test_plot_curves_plots_only_numeric_keys(tmp_path):
    records = [{"step": s, "loss": 1.0 / (s + 1), "note": "x"} for s in range(5)]
    records.append({"step": 5, "loss": float("nan")})
    path = str(tmp_path / "curve.png")
    assert plot_curves(path, records, ["loss", "note", "absent"]) == ["loss"]
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    # The one line is drawn in matplotlib's first colour (31, 119, 180).
    line = np.abs(pixels - [31, 119, 180]).max(-1) < 30
    assert line.sum() > 50
    assert plot_curves(path, records, ["note"]) == []
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert (np.abs(pixels - [31, 119, 180]).max(-1) < 30).sum() == 0


def test_duplicate_names_are_rejected(tmp_path, metrics_file):
    grid = ImageGrid("x", [_solid((1, 2, 3))], ["c"])
    with pytest.raises(ValueError):
        write_report(str(tmp_path), grids=[grid], curves=[Curves("x", metrics_file)])
    with pytest.raises(ValueError):
        write_report(str(tmp_path), grids=[ImageGrid("html", [_solid((1, 2, 3))], ["c"])])
