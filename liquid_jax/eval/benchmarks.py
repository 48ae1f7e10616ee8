"""Text-to-image benchmarks: their prompt files as distributed, and the output layout each
official scorer reads.

* ``mjhq30k``: MJHQ-30K's ``meta_data.json`` ({id: {"category", "prompt", ...}}) ->
  ``<category>/<id>.png``, one image per prompt (clean-fid per category, ``eval fid``).
* ``geneval``: GenEval's ``evaluation_metadata.jsonl`` -> ``<00000>/metadata.jsonl`` (the
  prompt's line) and ``<00000>/samples/<0000>.png`` (4 images per prompt by default).
* ``genai-bench``: GenAI-Bench's ``genai_image.json`` ({"00000": {"prompt", ...}}) ->
  ``<00000>.jpeg``, one per prompt, as t2v_metrics reads a model's folder.
* ``dpg``: DPG-Bench's ``prompts/`` folder (one ``<id>.txt`` per prompt) -> ``<id>.png``, a
  2x2 grid of 4 images, as its scorer crops it.
* ``parti``: PartiPrompts' ``PartiPrompts.tsv`` (Prompt, Category, Challenge, Note) and
  ``prompts``: a ``.txt`` (a prompt per line) or ``.jsonl`` ({"prompt", optional "id"}) ->
  ``<id>_<k>.png`` with ``id`` the 5-digit line index unless the file gives one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Any, Sequence

import numpy as np
from etils import epath
from PIL import Image

from liquid_jax import paths
from liquid_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt of a benchmark: its id (file names use it), text and the benchmark's own
    record for it."""

    id: str
    text: str
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def image_grid(images: Sequence[np.ndarray], columns: int) -> np.ndarray:
    """Equal-sized images tiled row by row, no margins: [rows * H, columns * W, C]."""
    images = [np.asarray(im) for im in images]
    rows = -(-len(images) // columns)
    h, w = images[0].shape[:2]
    grid = np.zeros((rows * h, columns * w) + images[0].shape[2:], images[0].dtype)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return grid


def _read_text(path: epath.Path, flag: str) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give the benchmark's prompt file")
    return path.read_text(encoding="utf-8")


def _json_lines(path: epath.Path, flag: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(_read_text(path, flag).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {number} is not JSON ({e.msg}); expected one object per line") from None
        if not isinstance(record, dict):
            raise UserError(f"{path} line {number} is not a JSON object")
        records.append((number, record))
    return records


def _json_mapping(path: epath.Path, expected: str) -> dict[str, Any]:
    """A JSON file holding one object that maps ids to records, like ``expected``."""
    try:
        meta = json.loads(_read_text(path, "--prompts"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not JSON ({e.msg}); expected {expected}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must map ids to records, like {expected}")
    return meta


def _prompt_of(record: dict[str, Any], where: str, key: str = "prompt") -> str:
    text = record.get(key)
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where} has no {key!r} text; is this the benchmark's prompt file?")
    return text


class Benchmark:
    """A benchmark's prompt reader and output layout. ``num_images``: images per prompt the
    scorer expects (None: the user chooses, ``default_num_images`` by default)."""

    name = ""
    num_images: int | None = None
    default_num_images = 1

    def read(self, path: str | os.PathLike) -> list[Prompt]:
        raise NotImplementedError

    def files(self, prompt: Prompt, num_images: int) -> list[str]:
        """The files (relative to the output folder) that hold ``prompt``'s results."""
        return [f"{prompt.id}_{k}.png" for k in range(num_images)]

    def contents(self, prompt: Prompt, images: Sequence[np.ndarray]) -> list[bytes]:
        """The bytes of each of ``files(prompt, len(images))``, in that order."""
        return [_png(image) for image in images]

    def check_num_images(self, num_images: int | None) -> int:
        """``num_images`` or the default; refuses a count the scorer cannot read."""
        if num_images is None:
            return self.num_images or self.default_num_images
        if num_images < 1:
            raise UserError(f"--num_images must be >= 1, got {num_images}")
        if self.num_images is not None and num_images != self.num_images:
            raise UserError(f"{self.name} is scored on {self.num_images} image(s) per prompt; "
                            f"drop --num_images or set it to {self.num_images}")
        return num_images


class MJHQ30K(Benchmark):
    name = "mjhq30k"
    num_images = 1

    def read(self, path):
        path = paths.resolve(path)
        prompts = []
        for key, record in _json_mapping(path, "MJHQ-30K's meta_data.json").items():
            if not isinstance(record, dict) or not isinstance(record.get("category"), str):
                raise UserError(f"{path}: entry {key!r} has no 'category'; expected MJHQ-30K's meta_data.json")
            prompts.append(Prompt(str(key), _prompt_of(record, f"{path}: entry {key!r}"), record))
        return prompts

    def files(self, prompt, num_images):
        return [f"{prompt.record['category']}/{prompt.id}.png"]


class GenEval(Benchmark):
    name = "geneval"
    default_num_images = 4

    def read(self, path):
        path = paths.resolve(path)
        return [Prompt(f"{i:05d}", _prompt_of(record, f"{path} line {number}"), record)
                for i, (number, record) in enumerate(_json_lines(path, "--prompts"))]

    def files(self, prompt, num_images):
        return [f"{prompt.id}/metadata.jsonl"] + [f"{prompt.id}/samples/{k:04d}.png" for k in range(num_images)]

    def contents(self, prompt, images):
        return [(json.dumps(prompt.record) + "\n").encode()] + super().contents(prompt, images)


class GenAIBench(Benchmark):
    name = "genai-bench"
    num_images = 1

    def read(self, path):
        path = paths.resolve(path)
        return [Prompt(str(key), _prompt_of(record if isinstance(record, dict) else {}, f"{path}: entry {key!r}"),
                       record) for key, record in _json_mapping(path, "GenAI-Bench's genai_image.json").items()]

    def files(self, prompt, num_images):
        return [f"{prompt.id}.jpeg"]

    def contents(self, prompt, images):
        return [_jpeg(images[0])]


class DPGBench(Benchmark):
    name = "dpg"
    num_images = 4

    def read(self, path):
        folder = paths.resolve(path)
        if not folder.is_dir():
            raise NotADirectoryError(f"--prompts {path}: DPG-Bench's prompts are a folder of <id>.txt files")
        files = sorted(f for f in folder.iterdir() if f.name.endswith(".txt"))
        if not files:
            raise UserError(f"--prompts {path} holds no .txt prompt files")
        prompts = []
        for f in files:
            text = f.read_text(encoding="utf-8").strip()
            if not text:
                raise UserError(f"{f} is empty; every DPG-Bench prompt file holds one prompt")
            prompts.append(Prompt(f.name[: -len(".txt")], text))
        return prompts

    def files(self, prompt, num_images):
        return [f"{prompt.id}.png"]

    def contents(self, prompt, images):
        return [_png(image_grid(images, columns=2))]


class PartiPrompts(Benchmark):
    name = "parti"

    def read(self, path):
        path = paths.resolve(path)
        rows = list(csv.DictReader(io.StringIO(_read_text(path, "--prompts")), delimiter="\t"))
        if rows and "Prompt" not in rows[0]:
            raise UserError(f"{path} has no 'Prompt' column; expected PartiPrompts.tsv "
                            "(Prompt, Category, Challenge, Note)")
        return [Prompt(f"{i:05d}", _prompt_of(row, f"{path} row {i + 2}", "Prompt"), dict(row))
                for i, row in enumerate(rows)]


class PlainPrompts(Benchmark):
    name = "prompts"

    def read(self, path):
        path = paths.resolve(path)
        if path.name.endswith(".jsonl"):
            prompts = [Prompt(str(record.get("id", f"{i:05d}")), _prompt_of(record, f"{path} line {number}"), record)
                       for i, (number, record) in enumerate(_json_lines(path, "--prompts"))]
        else:
            lines = [line.strip() for line in _read_text(path, "--prompts").splitlines() if line.strip()]
            prompts = [Prompt(f"{i:05d}", line) for i, line in enumerate(lines)]
        ids = [p.id for p in prompts]
        if len(set(ids)) != len(ids):
            raise UserError(f"{path} gives the same id to several prompts; ids name the output files")
        return prompts


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (MJHQ30K(), GenEval(), GenAIBench(), DPGBench(),
                                                          PartiPrompts(), PlainPrompts())}


def get(name: str) -> Benchmark:
    """The benchmark called ``name``."""
    if name not in BENCHMARKS:
        raise UserError(f"--benchmark {name!r} is unknown; choose one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]
