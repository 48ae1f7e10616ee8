"""``liquid-jax eval vqa``: LLaVA answer files, greedy answers equal to ``generate_text``,
resuming after a kill, and bad question files refused before any work."""

import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import shortuuid

from helpers import REPO
import liquid_jax
from helpers.sample_models import tiny_checkpoints
from liquid_jax.errors import UserError
from liquid_jax.eval import vqa

MAX_NEW = 6
SUFFIX = "\nAnswer the question using a single word or phrase."
# (question_id, image, question): LLaVA files use integer or string ids.
QUESTIONS = [
    (101, "a.png", "what is in this image"),
    (102, "b.png", "a red cat" + SUFFIX),
    ("gqa-7", "a.png", "what is on the blue mat" + SUFFIX),
    (104, "c.png", "what is in this image"),
    (105, "b.png", "old trees near water"),
]
ANSWER_KEYS = {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}


def _cli(*args, devices=1):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.pop("LIQUID_JAX_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "liquid_jax.cli", "eval", "vqa", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _write_questions(path, rows):
    with open(path, "w") as f:
        for qid, image, text in rows:
            f.write(json.dumps({"question_id": qid, "image": image, "text": text, "category": "default"}) + "\n")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A tiny model (image-code rows drawn at random, so answers depend on the image), its
    VQGAN, three PNGs of different shapes and a question file."""
    root = tmp_path_factory.mktemp("vqa")
    checkpoint, vqgan = tiny_checkpoints(str(root), image_code_std=0.02)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (12, 9, 3)), ("b.png", (8, 8, 3)), ("c.png", (10, 16, 3))):
        PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(images / name)
    questions = root / "questions.jsonl"
    _write_questions(questions, QUESTIONS)
    flags = [f"--checkpoint={checkpoint}", f"--vqgan={vqgan}", f"--questions={questions}",
             f"--image_dir={images}", f"--max_new_tokens={MAX_NEW}", "--dtype=float32", "--model_id=tiny-liquid"]
    return dict(root=root, checkpoint=checkpoint, vqgan=vqgan, images=images, questions=questions, flags=flags)


@pytest.fixture(scope="module")
def expected(bench):
    """Greedy answers of ``lm.generate_text`` to all questions in one batch."""
    lm = liquid_jax.load(bench["checkpoint"], dtype="float32", progress=False)
    codec = liquid_jax.load_vqgan(bench["vqgan"])
    result = lm.generate_text([q for _, _, q in QUESTIONS], MAX_NEW, codec=codec,
                              images=[str(bench["images"] / image) for _, image, _ in QUESTIONS])
    return [text.strip() for text in result.texts]


@pytest.fixture(scope="module")
def answers(bench):
    """The answer file of one CLI run in batches of 2 (the last one filled up)."""
    out = bench["root"] / "answers" / "full.jsonl"
    done = _cli(*bench["flags"], f"--out={out}", "--batch_size=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 answers (0 from an earlier run, 5 new)" in done.stdout
    return out.read_text()


def _check_llava_answers(text, expected):
    """Every line is one LLaVA answer object; one per question, in question order."""
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["question_id"] for r in records] == [qid for qid, _, _ in QUESTIONS]
    for record, (qid, _, question), answer in zip(records, QUESTIONS, expected):
        assert set(record) == ANSWER_KEYS
        assert type(record["question_id"]) is type(qid)
        assert record["prompt"] == question
        assert isinstance(record["text"], str) and record["text"] == answer
        assert isinstance(record["answer_id"], str) and len(record["answer_id"]) == 22
        assert shortuuid.encode(shortuuid.decode(record["answer_id"])) == record["answer_id"]
        assert record["model_id"] == "tiny-liquid" and record["metadata"] == {}
    assert len({r["answer_id"] for r in records}) == len(records)
    return records


def test_answers_are_llava_format_and_equal_generate_text(answers, expected):
    _check_llava_answers(answers, expected)
    assert expected[0] != expected[3], "same question, other image: the answers must show the image was read"


def test_rerun_resumes_after_a_kill(bench, answers, expected, tmp_path):
    lines = answers.splitlines(keepends=True)
    out = tmp_path / "resumed.jsonl"
    out.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])  # killed mid-line
    # The rest in one batch of 3, data-parallel over 2 devices (padded to 4 rows).
    done = _cli(*bench["flags"], f"--out={out}", "--batch_size=3", devices=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "5 answers (2 from an earlier run, 3 new)" in done.stdout
    text = out.read_text()
    assert text.startswith(lines[0] + lines[1])  # earlier answers untouched, answer_id included
    _check_llava_answers(text, expected)

    done = _cli(*bench["flags"], f"--out={out}", "--checkpoint=/nonexistent")  # nothing left: no model
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == text


def test_question_without_image_exits_2_naming_line_and_key(bench, tmp_path):
    questions = tmp_path / "bad.jsonl"
    _write_questions(questions, QUESTIONS)
    lines = questions.read_text().splitlines()
    record = json.loads(lines[2])
    del record["image"]
    lines[2] = json.dumps(record)
    questions.write_text("\n".join(lines) + "\n")
    done = _cli(*bench["flags"], f"--questions={questions}", f"--out={tmp_path / 'a.jsonl'}")
    assert done.returncode == 2, done.stderr[-3000:]
    message = done.stderr.strip().splitlines()[-1]
    assert f"{questions} line 3" in message and '"image"' in message and "Traceback" not in done.stderr
    assert not (tmp_path / "a.jsonl").exists()


def test_prepare_refuses_what_would_corrupt_an_answer_file(bench, tmp_path):
    questions, images = str(bench["questions"]), str(bench["images"])
    duplicate = tmp_path / "dup.jsonl"
    _write_questions(duplicate, QUESTIONS + [QUESTIONS[1]])
    with pytest.raises(UserError, match=r"line 6: question_id 102 repeats line 2"):
        vqa.prepare(str(duplicate), images, str(tmp_path / "a.jsonl"), "m")
    missing = tmp_path / "missing.jsonl"
    _write_questions(missing, QUESTIONS[:3] + [(104, "nope.png", "x")])
    with pytest.raises(UserError, match=r"line 4: \"image\" nope.png is not a file"):
        vqa.prepare(str(missing), images, str(tmp_path / "a.jsonl"), "m")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(vqa.answer_record(vqa.Question(101, "a.png", "q", 1), "x", "other")) + "\n")
    with pytest.raises(UserError, match="model_id 'other', not 'm'"):
        vqa.prepare(questions, images, str(other), "m")
    stranger = tmp_path / "stranger.jsonl"
    stranger.write_text(json.dumps(vqa.answer_record(vqa.Question(999, "a.png", "q", 1), "x", "m")) + "\n")
    with pytest.raises(UserError, match="question_id 999 is not in the question file"):
        vqa.prepare(questions, images, str(stranger), "m")
    with pytest.raises(UserError, match="line 1: not an answer with a question_id"):
        vqa.prepare(questions, images, str(bench["images"] / "a.png"), "m")
    unfinished = tmp_path / "unfinished.json"
    unfinished.write_text('{"answers": []}')  # no newline: would look like a killed run's last line
    with pytest.raises(UserError, match="ends in a line that is not an answer"):
        vqa.prepare(questions, images, str(unfinished), "m")
    assert unfinished.read_text() == '{"answers": []}'
