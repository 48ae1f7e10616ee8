"""LLaVA-format VQA: question files in, answer files out, as LLaVA's scorers read them.

Question file (JSONL, LLaVA's ``llava/eval/model_vqa_loader.py`` input): one object per
line with ``question_id`` (integer or string, unique), ``image`` (file name under the
image folder) and ``text`` (the question, with any instruction suffix such as
"\\nAnswer the question using a single word or phrase."); other keys (``category``) are
kept in the question file only.

Answer file (JSONL, what LLaVA writes): one object per question, in question order:
``{"question_id", "prompt": <question text>, "text": <answer, stripped>, "answer_id":
<shortuuid>, "model_id", "metadata": {}}``. The scorers (TextVQA, GQA, POPE, VQAv2) read
``question_id`` and ``text``; POPE's pairs answers with labels by order.

Resumable: answers are appended batch by batch (flushed and fsynced); a re-run keeps the
answers already in the file, cuts off a last line left unfinished by a killed run and
answers the rest. The answer file is local. One process on one host answers every
question (batches spread over that host's devices by the model's mesh).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from etils import epath
from tqdm.auto import tqdm

from liquid_jax import paths
from liquid_jax.errors import UserError
from liquid_jax.tokenizer.image import load_image

QUESTION_KEYS = ("question_id", "image", "text")
_ANSWER_START = b'{"question_id": '  # how every line ``answer_record`` writes begins


@dataclasses.dataclass(frozen=True)
class Question:
    """One line of a question file (``line`` counts from 1)."""

    question_id: int | str
    image: str
    text: str
    line: int


@dataclasses.dataclass(frozen=True)
class VQAJob:
    """The questions of a file, the ones the answer file ``out`` still lacks with their
    image files, and the model name written into every answer."""

    questions: list[Question]
    pending: list[tuple[Question, epath.Path]]
    out: str
    model_id: str

    @property
    def resumed(self) -> int:
        """Answers already in ``out``."""
        return len(self.questions) - len(self.pending)


def _is_question_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def read_questions(path: str) -> list[Question]:
    """The questions of a LLaVA JSONL question file; a bad line is a UserError naming it."""
    try:
        text = paths.resolve(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"question file {path} does not exist") from None
    questions, first_line = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not JSON ({e.msg}); a question file has one JSON object per line") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with keys {', '.join(QUESTION_KEYS)}")
        for key in QUESTION_KEYS:
            if key not in record:
                raise UserError(f'{where}: no "{key}" key; every question needs "question_id", "image" and "text"')
        qid = record["question_id"]
        if not _is_question_id(qid):
            raise UserError(f'{where}: "question_id" must be an integer or a string, got {qid!r}')
        for key in ("image", "text"):
            if not isinstance(record[key], str):
                raise UserError(f'{where}: "{key}" must be a string, got {record[key]!r}')
        if qid in first_line:
            raise UserError(f"{where}: question_id {qid!r} repeats line {first_line[qid]}; answers are "
                            "matched by question_id, so each must be unique")
        first_line[qid] = number
        questions.append(Question(qid, record["image"], record["text"], number))
    if not questions:
        raise UserError(f"question file {path} holds no questions")
    return questions


def resume_answers(out: str, questions: list[Question], model_id: str) -> set[int | str]:
    """The question_ids already answered in the local file ``out`` (none if it does not
    exist). A last line without its newline (a killed run) is cut off the file; a file
    that is not an earlier answer file of these questions by ``model_id`` is refused."""
    if not os.path.exists(out):
        return set()
    with open(out, "rb") as f:
        data = f.read()
    complete = data.rfind(b"\n") + 1
    known = {q.question_id for q in questions}
    done: set[int | str] = set()
    for number, line in enumerate(data[:complete].splitlines(), 1):
        if not line.strip():
            continue
        where = f"answer file {out} line {number}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or not _is_question_id(record.get("question_id")):
            raise UserError(f"{where}: not an answer with a question_id; --out must be a new file or the "
                            "answer file of an earlier run to resume")
        qid = record["question_id"]
        if record.get("model_id") != model_id:
            raise UserError(f"{where}: an answer of model_id {record.get('model_id')!r}, not {model_id!r}; "
                            "give another --out, or that --model_id to continue its run")
        if qid not in known:
            raise UserError(f"{where}: question_id {qid!r} is not in the question file; give another --out "
                            "for another question file")
        if qid in done:
            raise UserError(f"{where}: question_id {qid!r} is answered twice; give another --out")
        done.add(qid)
    if complete < len(data):
        if not data[complete:].startswith(_ANSWER_START[: len(data) - complete]):
            raise UserError(f"answer file {out} ends in a line that is not an answer; --out must be a new "
                            "file or the answer file of an earlier run to resume")
        logging.warning("%s: dropping an unfinished last line (%d bytes) left by an interrupted run",
                        out, len(data) - complete)
        os.truncate(out, complete)
    return done


def prepare(questions_file: str, image_dir: str, out: str, model_id: str) -> VQAJob:
    """Reads and checks everything before a model is loaded: the questions, the answers
    already in ``out`` and the image file of every question still to answer."""
    out = paths.local(out, "--out")
    questions = read_questions(questions_file)
    done = resume_answers(out, questions, model_id)
    folder = paths.resolve(image_dir)
    pending = [q for q in questions if q.question_id not in done]
    if pending and not folder.is_dir():
        raise UserError(f"--image_dir {image_dir} is not a directory; download the benchmark's images there")
    files = []
    for q in pending:
        file = folder / q.image
        if not file.is_file():
            raise UserError(f'{questions_file} line {q.line}: "image" {q.image} is not a file in {image_dir}; '
                            "download the benchmark's images there or fix --image_dir")
        files.append((q, file))
    return VQAJob(questions, files, out, model_id)


def answer_record(question: Question, answer: str, model_id: str) -> dict[str, Any]:
    """One line of a LLaVA answer file."""
    import shortuuid

    return {"question_id": question.question_id, "prompt": question.text, "text": answer.strip(),
            "answer_id": shortuuid.uuid(), "model_id": model_id, "metadata": {}}


def answer(
    lm: Any,
    codec: Any,
    job: VQAJob,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    image_size: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Answers ``job``'s pending questions with ``lm.generate_text`` in batches of
    ``batch_size``, appending each batch to ``job.out``; returns how many it answered.

    A last partial batch after full ones is filled up with copies of its last question,
    so the program compiled for the full ones is reused. Each batch samples with ``seed`` plus its first question's line.
    """
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    os.makedirs(os.path.dirname(job.out) or ".", exist_ok=True)
    bar = tqdm(total=len(job.questions), initial=job.resumed, desc="questions", disable=not progress)
    with open(job.out, "a", encoding="utf-8") as f:
        for start in range(0, len(job.pending), batch_size):
            batch = job.pending[start:start + batch_size]
            rows = batch + [batch[-1]] * (batch_size - len(batch)) if start else batch
            images = {str(file): load_image(file.read_bytes(), name=str(file)) for _, file in batch}
            result = lm.generate_text(
                [q.text for q, _ in rows], max_new_tokens, images=[images[str(file)] for _, file in rows],
                codec=codec, image_size=image_size, temperature=temperature, top_k=top_k, top_p=top_p,
                seed=seed + batch[0][0].line,
            )
            f.write("".join(json.dumps(answer_record(q, text, job.model_id)) + "\n"
                            for (q, _), text in zip(batch, result.texts)))
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    bar.close()
    _order_as_questions(job.out, job.questions)
    return len(job.pending)


def _order_as_questions(out: str, questions: list[Question]) -> None:
    """Rewrites ``out`` (atomically) in question order if a resumed run left it otherwise."""
    with open(out, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    position = {q.question_id: i for i, q in enumerate(questions)}
    ordered = sorted(lines, key=lambda line: position[json.loads(line)["question_id"]])
    if ordered == lines:
        return
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(ordered)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
