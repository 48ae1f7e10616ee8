"""Input pipeline throughput on this host: sequences/s, tokens/s, packing efficiency.

Builds a realistic mixture in a temporary directory -- text documents with
log-normal lengths (median 250 words, long tail split at the row length) and
image-caption pairs with 32x32 = 1024 codes -- tokenizes with a SentencePiece model
trained on the fly, and times ``DataIterator.next_numpy`` at seq_len 2048 after a
warm-up. Writes benchmarks/results/pipeline_throughput.json.

  python benchmarks/pipeline_throughput.py [--batches 200] [--worker_count 0]
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import numpy as np
import sentencepiece as spm
from absl import app, flags
from tqdm import tqdm

from liquid_jax.data import packing, pipeline, records
from liquid_jax.data.shards import write_shard
from liquid_jax.model.config import SpecialTokens
from liquid_jax.tokenizer.text import SentencePieceTokenizer

_BATCHES = flags.DEFINE_integer("batches", 200, "Timed batches.")
_WARMUP = flags.DEFINE_integer("warmup", 20, "Untimed batches first.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Rows per batch.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 2048, "Row length.")
_IMAGE_WEIGHT = flags.DEFINE_float("image_weight", 0.2, "Mixture weight of the image-caption source.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "Grain worker processes.")
_OUT = flags.DEFINE_string(
    "output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pipeline_throughput.json"),
    "Result file.",
)

TEXT_VOCAB = 2000
CODEBOOK = 8192
# A Zipf-distributed vocabulary of made-up words gives text with realistic token statistics.
_SYLLABLES = "ka lo mi ne ru sa te vo pi da fe gu ho ji be ze".split()


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return ["".join(rng.choice(_SYLLABLES, size=int(rng.integers(1, 4)))) for _ in range(n)]


def _text(rng: np.random.Generator, vocab: list[str], probs: np.ndarray, n_words: int) -> str:
    words = rng.choice(vocab, size=n_words, p=probs)
    return " ".join(w + ("." if i % 12 == 11 else "") for i, w in enumerate(words))


def build_data(directory: str, seed: int = 0) -> SentencePieceTokenizer:
    """Writes the text and image shards and trains the tokenizer; returns the tokenizer."""
    rng = np.random.default_rng(seed)
    vocab = _words(rng, 5000)
    probs = 1.0 / np.arange(1, len(vocab) + 1)
    probs /= probs.sum()
    corpus = os.path.join(directory, "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(3000):
            f.write(_text(rng, vocab, probs, 30) + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(directory, "sp"), vocab_size=TEXT_VOCAB, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        user_defined_symbols=["<u4>", "<u5>", "<u6>", "<boi>", "<eoi>", "<unconditional>"], minloglevel=2,
    )
    lengths = np.clip(rng.lognormal(np.log(250), 1.0, size=4000), 5, 6000).astype(int)
    texts = [records.encode_text_record(records.TextRecord(_text(rng, vocab, probs, int(n)), f"t{i}"))
             for i, n in enumerate(lengths)]
    images = [
        records.encode_image_record(records.ImageRecord(
            _text(rng, vocab, probs, int(rng.integers(8, 40))),
            rng.integers(0, CODEBOOK, size=1024).astype(np.uint16), 32, 32, f"i{i}"))
        for i in range(2000)
    ]
    for name, recs in (("text", texts), ("image", images)):
        for s in range(4):
            write_shard(os.path.join(directory, name, records.shard_name(name, s, 4)), recs[s::4])
    return SentencePieceTokenizer(os.path.join(directory, "sp.model"))


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as d:
        tok = build_data(d)
        c = pipeline.default_config()
        c.sources = [
            {"name": "text", "path": os.path.join(d, "text"), "kind": "text", "weight": 1 - _IMAGE_WEIGHT.value},
            {"name": "image", "path": os.path.join(d, "image"), "kind": "image", "weight": _IMAGE_WEIGHT.value},
        ]
        c.seq_len, c.batch_size, c.worker_count = _SEQ_LEN.value, _BATCH.value, _WORKERS.value
        ds, _ = pipeline.build_dataset(c, tok, SpecialTokens(), TEXT_VOCAB, process_index=0, process_count=1)
        with pipeline.DataIterator(ds, TEXT_VOCAB) as it:
            for _ in tqdm(range(_WARMUP.value), desc="warm-up"):
                it.next_numpy()
            before = it.counters
            segments = []
            start = time.perf_counter()
            for _ in tqdm(range(_BATCHES.value), desc="timed", unit="batch"):
                segments.append(it.next_numpy()["segment_ids"])
            seconds = time.perf_counter() - start
            after = it.counters
    rows = _BATCHES.value * _BATCH.value
    seg = np.stack(segments)
    delta = {k: after[k] - before[k] for k in after}
    image_tokens = delta["tokens_image"] / max(1, delta["tokens_image"] + delta["tokens_text"])
    result = {
        "tokens_per_s": rows * _SEQ_LEN.value / seconds,
        "real_tokens_per_s": float(np.count_nonzero(seg)) / seconds,
        "sequences_per_s": rows / seconds,
        "documents_per_s": (delta["examples_text"] + delta["examples_t2i"] + delta["examples_caption"]) / seconds,
        "packing_efficiency": packing.packing_efficiency(seg),
        "image_token_fraction": image_tokens,
        "seconds": seconds,
        "counters": delta,
        "config": {
            **{k: v for k, v in c.to_dict().items() if k != "sources"},
            "sources": [{k: v for k, v in s.items() if k != "path"} for s in c.sources],
            "text_length_words": "lognormal(median 250, sigma 1), clipped to [5, 6000]",
            "image_codes": 1024,
            "batches": _BATCHES.value,
            "warmup": _WARMUP.value,
            "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        },
    }
    os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
    with open(_OUT.value, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("config", "counters")}, indent=1))


if __name__ == "__main__":
    app.run(main)
