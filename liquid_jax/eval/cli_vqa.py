"""``liquid-jax eval vqa``: LLaVA-format VQA questions -> LLaVA-format answer file.

  liquid-jax eval vqa --checkpoint=liquid-7b/ --vqgan=vqgan/ \\
      --questions=textvqa/llava_textvqa_val_v051_ocr.jsonl --image_dir=textvqa/train_images \\
      --out=answers/textvqa.jsonl
  liquid-jax eval vqa --checkpoint=... --vqgan=... --questions=pope/llava_pope_test.jsonl \\
      --image_dir=coco/val2014 --out=answers/pope.jsonl --batch_size=32 --max_new_tokens=16

Reads LLaVA's question files (JSONL: question_id, image, text) and writes the answer file
LLaVA's scorers read (question_id, prompt, text, answer_id, model_id, metadata), greedy by
default, in batches. Every question and image file is checked before the model is loaded.
Re-running the same command resumes: answers already in --out are kept (an unfinished
last line from a killed run is dropped) and only the rest are answered. Runs as one
process on one host, data-parallel over its devices (--mesh shards a large model instead).
"""

from __future__ import annotations

import os

from absl import flags

from liquid_jax.eval import vqa
from liquid_jax.sample import cli_sample

cli_sample.define_flags(temperature=0.0, top_k=0, top_p=1.0)
_QUESTIONS = flags.DEFINE_string("questions", None, "LLaVA question file (JSONL: question_id, image, text).",
                                 required=True)
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Folder the questions' image names are relative to.",
                                 required=True)
_OUT = flags.DEFINE_string("out", None, "Answer file (JSONL, local); an existing one is resumed.", required=True)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Questions answered together.", lower_bound=1)
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Longest answer in tokens.", lower_bound=1)
_MODEL_ID = flags.DEFINE_string("model_id", None, "model_id written into every answer (default: the last "
                                "component of --checkpoint).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "Square size images are tokenized at (default: the VQGAN's resolution).")


def main(argv: list[str]) -> None:
    del argv
    checkpoint = flags.FLAGS.checkpoint
    model_id = _MODEL_ID.value or os.path.basename(os.path.normpath(checkpoint))
    job = vqa.prepare(_QUESTIONS.value, _IMAGE_DIR.value, _OUT.value, model_id)
    if job.pending:
        codec = cli_sample.load_codec(required=True)
        lm = cli_sample.load_model(local=True)
        vqa.answer(lm, codec, job, batch_size=_BATCH_SIZE.value, max_new_tokens=_MAX_NEW.value,
                   image_size=_IMAGE_SIZE.value, **cli_sample.sampling_flags())
    print(f"{_OUT.value}: {len(job.questions)} answers ({job.resumed} from an earlier run, "
          f"{len(job.pending)} new)")
