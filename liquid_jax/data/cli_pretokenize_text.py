"""``liquid-jax pretokenize text``: JSONL / TXT / Parquet -> ArrayRecord text shards.

Example::

  liquid-jax pretokenize text --input 'corpus/*.jsonl' --output data/text \\
      --num_workers 4 --worker_index 0
"""

from __future__ import annotations

import json

from absl import flags, logging

from liquid_jax.data import pretokenize_text, shards

_INPUT = flags.DEFINE_multi_string("input", None, "Input files or globs (.jsonl, .json, .txt, .parquet).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output directory for the shards.", required=True)
_PREFIX = flags.DEFINE_string("prefix", "text", "Shard file name prefix.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSON field / Parquet column with the text.")
_KEY_FIELD = flags.DEFINE_string("key_field", "id", "JSON field / Parquet column with a document key.")
_TXT_MODE = flags.DEFINE_enum("txt_mode", "file", list(pretokenize_text.TXT_MODES), "A .txt file is one document, or one per line.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "Workers sharing the job (0: one per jax process).")
_WORKER_INDEX = flags.DEFINE_integer("worker_index", -1, "This worker's index in [0, num_workers).")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace every shard of an --output folder made with other settings or inputs "
    "(without it such a folder is refused).")


def main(argv: list[str]) -> None:
    del argv
    totals = pretokenize_text.pretokenize_text(
        _INPUT.value,
        _OUTPUT.value,
        prefix=_PREFIX.value,
        text_field=_TEXT_FIELD.value,
        key_field=_KEY_FIELD.value,
        txt_mode=_TXT_MODE.value,
        worker=shards.worker_slot(_NUM_WORKERS.value, _WORKER_INDEX.value),
        overwrite=_OVERWRITE.value,
    )
    logging.info("done: %s", totals)
    print(json.dumps(totals))
