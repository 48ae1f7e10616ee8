"""An evaluation report on disk: ``report.json`` for programs, ``report.html`` for people.

The HTML page links PNG files written next to it (image grids and metric curves), so
the directory can be copied or zipped as a whole.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from typing import Any, BinaryIO, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont


@dataclasses.dataclass
class ImageGrid:
    """Images (uint8 [H, W, 3] or [H, W]) shown in rows of ``columns``, each with a caption."""

    name: str
    images: Sequence[np.ndarray]
    captions: Sequence[str]
    columns: int = 8
    title: str = ""


@dataclasses.dataclass
class Curves:
    """Metrics from a JSONL file (one JSON object per line, with a ``step`` field) plotted
    against step: one line per key."""

    name: str
    jsonl_path: str
    keys: Sequence[str] = ("loss",)
    title: str = ""


def read_jsonl_metrics(path: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, skipping blank lines."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


_MIN_TEXT_WIDTH = 128
_FONT_SIZE = 11


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap to lines at most ``width`` pixels wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def save_image_grid(
    path: str | BinaryIO, images: Sequence[np.ndarray], captions: Sequence[str], columns: int = 8, scale: int = 2
) -> None:
    """Write images as one PNG (to a path or an open binary file): a grid of cells, each
    image enlarged ``scale`` times (nearest neighbour) above its wrapped caption."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise ValueError("no images to draw")
    arrays = [_as_rgb(image) for image in images]
    image_h = max(a.shape[0] for a in arrays) * scale
    image_w = max(a.shape[1] for a in arrays) * scale
    font = ImageFont.load_default(size=_FONT_SIZE)
    line_h = int(sum(font.getmetrics())) + 2
    text_w = max(image_w, _MIN_TEXT_WIDTH)
    wrapped = [_wrap(c, font, text_w) for c in captions]
    pad = 6
    cell_w = text_w + 2 * pad
    cell_h = image_h + max(len(lines) for lines in wrapped) * line_h + 2 * pad
    columns = max(1, min(columns, len(arrays)))
    rows = math.ceil(len(arrays) / columns)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (array, lines) in enumerate(zip(arrays, wrapped)):
        x = (index % columns) * cell_w + pad
        y = (index // columns) * cell_h + pad
        enlarged = (array.shape[1] * scale, array.shape[0] * scale)
        picture = Image.fromarray(array).resize(enlarged, Image.NEAREST)
        sheet.paste(picture, (x, y))
        for number, line in enumerate(lines):
            draw.text((x, y + image_h + 2 + number * line_h), line, fill="black", font=font)
    sheet.save(path, format="PNG")


def _as_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [H, W], got {array.shape}")
    return array


def plot_curves(
    path: str, records: Sequence[dict[str, Any]], keys: Sequence[str], title: str = ""
) -> list[str]:
    """Plot ``keys`` of metric records against their ``step`` into a PNG; returns the keys
    that had data."""
    # A bare Figure (no pyplot) renders with Agg and leaves the caller's backend alone.
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    plotted = []
    for key in keys:
        points = [(r["step"], r[key]) for r in records if "step" in r and _is_number(r.get(key))]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=key)
            plotted.append(key)
    axes.set_xlabel("step")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if plotted:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return plotted


def _is_number(value: Any) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


def _json_ready(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays become numbers and lists, non-finite
    floats become null (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _html_table(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(heading: str, filename: str) -> str:
    return f'<h2>{html.escape(heading)}</h2><img src="{html.escape(filename)}" alt="{html.escape(heading)}">'


_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def write_report(
    out_dir: str,
    *,
    title: str = "liquid_jax report",
    metrics: dict[str, Any] | None = None,
    tables: dict[str, Sequence[dict[str, Any]]] | None = None,
    grids: Sequence[ImageGrid] = (),
    curves: Sequence[Curves] = (),
) -> dict[str, str]:
    """Write ``out_dir/report.json``, ``out_dir/report.html`` and one PNG per grid and
    curve plot. Returns the written paths by name ("json", "html", then grid and curve
    names)."""
    metrics = dict(metrics or {})
    tables = {name: list(rows) for name, rows in (tables or {}).items()}
    names = [g.name for g in grids] + [c.name for c in curves]
    if len(set(names)) != len(names) or {"json", "html"} & set(names):
        raise ValueError(f"grid and curve names must be unique and not 'json'/'html': {names}")
    os.makedirs(out_dir, exist_ok=True)
    written: dict[str, str] = {}
    sections = []
    if metrics:
        rows = [{"metric": k, "value": v} for k, v in metrics.items()]
        sections.append("<h2>Metrics</h2>" + _html_table(rows))
    for name, rows in tables.items():
        sections.append(f"<h2>{html.escape(name)}</h2>" + (_html_table(rows) if rows else "<p>(empty)</p>"))
    for grid in grids:
        filename = f"{grid.name}.png"
        save_image_grid(os.path.join(out_dir, filename), grid.images, grid.captions, grid.columns)
        written[grid.name] = os.path.join(out_dir, filename)
        sections.append(_figure(grid.title or grid.name, filename))
    plotted = {}
    for curve in curves:
        filename = f"{curve.name}.png"
        plotted[curve.name] = plot_curves(
            os.path.join(out_dir, filename),
            read_jsonl_metrics(curve.jsonl_path),
            curve.keys,
            curve.title or curve.name,
        )
        written[curve.name] = os.path.join(out_dir, filename)
        sections.append(_figure(curve.title or curve.name, filename))
    summary = {
        "title": title,
        "metrics": metrics,
        "tables": tables,
        "files": {name: os.path.basename(path) for name, path in written.items()},
        "curves": plotted,
    }
    written["json"] = os.path.join(out_dir, "report.json")
    with open(written["json"], "w") as f:
        json.dump(_json_ready(summary), f, indent=2, allow_nan=False)
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style>'
    body = f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections)
    page = f"<!DOCTYPE html>\n<html><head>{head}</head>\n<body>{body}\n</body></html>\n"
    written["html"] = os.path.join(out_dir, "report.html")
    with open(written["html"], "w") as f:
        f.write(page)
    return written
