"""The training input pipeline: mixed pre-tokenized sources -> packed, sharded batches.

Stages (Grain): per source, ArrayRecord shards -> this process's share -> shuffle
(reshuffled every epoch) -> repeat forever; sources mixed with their weights; each
record decoded, validated and turned into a Liquid sequence (``sequences``) with a
per-element RNG (deterministic for ``seed``); documents shifted, fitted to a row
(long-document policy) and first-fit packed (``packing``); rows batched; optionally
run in ``worker_count`` worker processes.

Batch format (``DataIterator.__next__``; int32 ``[batch_size, seq_len]`` global
``jax.Array``s sharded over the mesh's data axes by the logical axis ``"batch"``):

* ``tokens``: input token ids; ``targets``: the next token of the same document
  (``targets[b, i]`` is predicted from ``tokens[b, :i + 1]``);
* ``loss_mask``: 1 where ``targets`` is trained;
* ``segment_ids``: document number within the row, from 1; 0 marks padding;
* ``positions``: position within the document, from 0.

Image-code targets are those with ``targets >= text_vocab_size`` (see
``image_target_mask``); no separate modality array is shipped.

Skipped records (by reason), truncated or dropped long documents, examples per mode
and tokens per modality are accumulated, for this process, in ``DataIterator.counters``
and saved with the iterator state; so are, per source, the records read and those that
could not be used (skipped, or an image too long for a row). Nothing spins or trains on
nothing silently: before the first batch every source is inspected (``inspect_source``:
kind, VQGAN, a first usable record); a run of ``MAX_CONSECUTIVE_SKIPS`` unusable records
in a row, or a source whose unusable share passes ``max_skip_fraction`` once it has given
``SKIP_CHECK_RECORDS`` records, stops with a ``DataError`` naming the source and reasons.
Mixing is Grain's deterministic proportional interleave, so each source's share of
examples matches its weight closely.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Mapping

import grain
import jax
import ml_collections
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding

from liquid_jax.data import packing, records
from liquid_jax.data.sequences import T2I_SUFFIXES, Encoder, SequenceBuilder
from liquid_jax.data.sources import (
    DataError, ProcessShare, ReadFailure, SourceInfo, TolerantSource, inspect_source, list_shards, process_share,
)
from liquid_jax.model.config import SpecialTokens
from liquid_jax.model.image_format import DEFAULT_PIXELS_PER_CODE
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.sharding import logical_to_spec

SOURCE_KINDS = ("text", "image")
SKIP_REASONS = (
    "read_error",
    "corrupt",
    "bad_utf8",
    "empty_caption",
    "empty_text",
    "code_out_of_range",
)
# Per-document counters carried through packing, in this order.
COUNTERS = tuple(f"skipped_{r}" for r in SKIP_REASONS) + (
    "truncated",
    "dropped_too_long",
    "examples_t2i",
    "examples_caption",
    "examples_text",
)
# Counted by DataIterator from the batches themselves.
TOKEN_COUNTERS = ("tokens_text", "tokens_image", "loss_tokens_text", "loss_tokens_image", "padding")
BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions")
# Per source, after COUNTERS: records read, records that could not be used.
SOURCE_COUNTERS = ("records", "unusable")
MAX_CONSECUTIVE_SKIPS = 10_000
SKIP_CHECK_RECORDS = 256


def default_config() -> ml_collections.ConfigDict:
    """``config.data`` defaults; ``sources`` is a list of {name, path, kind, weight}."""
    c = ml_collections.ConfigDict()
    c.sources = []
    c.seq_len = 2048
    c.batch_size = 8  # global, over all processes
    c.t2i_ratio = 0.5  # image records -> text-to-image with this probability, else caption
    c.cfg_drop = 0.1  # text-to-image text replaced by <unconditional>
    c.size_prefix = False  # None: on when the image sources hold more than one grid
    c.pixels_per_code = 0  # VQGAN downsampling, for the size prefix; 0: from the shards' manifest (else 16)
    c.num_image_codes = DEFAULT_NUM_IMAGE_CODES  # a train config ties it to model.num_image_codes
    c.max_skip_fraction = 0.1  # a source with more unusable records stops the run
    c.text_eos = True
    c.long_document = "split"  # split | truncate | drop (text); image examples that
    # do not fit a row are always dropped, since a cut image is not a training example
    c.packing_bins = 256  # rows filled at once by the first-fit packer
    c.seed = 0
    c.num_epochs = 0  # 0: repeat every source forever; n: stop after n passes (mixing
    # stops at the first exhausted source)
    c.worker_count = 0
    c.worker_buffer_size = 2
    c.read_threads = 8
    return c


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One entry of ``config.data.sources``; ``kind`` None: read from the shards."""

    name: str
    path: str
    kind: str | None
    weight: float

    @classmethod
    def from_config(cls, index: int, entry: Mapping[str, Any]) -> "SourceSpec":
        entry = dict(entry)
        unknown = set(entry) - {"name", "path", "kind", "weight"}
        if unknown:
            raise ValueError(f"data.sources[{index}]: unknown keys {sorted(unknown)}")
        if "path" not in entry:
            raise ValueError(f"data.sources[{index}]: 'path' is required")
        spec = cls(
            name=str(entry.get("name", f"source{index}")),
            path=str(entry["path"]),
            kind=None if entry.get("kind") is None else str(entry["kind"]),
            weight=float(entry.get("weight", 1.0)),
        )
        if spec.kind is not None and spec.kind not in SOURCE_KINDS:
            raise ValueError(f"data.sources[{index}] ({spec.name}): kind {spec.kind!r} not in {SOURCE_KINDS}")
        if not spec.weight > 0:
            raise ValueError(f"data.sources[{index}] ({spec.name}): weight must be > 0, got {spec.weight}")
        return spec


def image_target_mask(targets: np.ndarray | jax.Array, text_vocab_size: int):
    """True where the target is an image code."""
    return targets >= text_vocab_size


class _Tag:
    """Pairs a raw record with its source's kind and index (a class, so workers can pickle it)."""

    def __init__(self, kind: str, source: int):
        self.kind = kind
        self.source = source

    def __call__(self, raw):
        return self.kind, self.source, raw


class _BuildExample:
    """Decodes a tagged record and builds its sequence; failures become skip reasons."""

    def __init__(self, builder: SequenceBuilder, t2i_ratio: float, cfg_drop: float, num_image_codes: int):
        self.builder = builder
        self.t2i_ratio = t2i_ratio
        self.cfg_drop = cfg_drop
        self.num_image_codes = num_image_codes

    def __call__(self, tagged, rng: np.random.Generator) -> dict[str, Any]:
        kind, source, raw = tagged
        if isinstance(raw, ReadFailure):
            logging.warning("unreadable record: %s", raw.detail)
            return {"skip": "read_error", "source": source}
        try:
            if kind == "text":
                rec = records.decode_text_record(raw)
                return {"kind": "text", "example": self.builder.text(rec.text), "source": source}
            rec = records.decode_image_record(raw, self.num_image_codes)
        except records.RecordError as e:
            return {"skip": e.reason, "source": source}
        if rng.random() < self.t2i_ratio:
            suffix = int(rng.integers(len(T2I_SUFFIXES)))
            unconditional = bool(rng.random() < self.cfg_drop)
            example = self.builder.text_to_image(rec.caption, rec.codes, rec.h, rec.w, suffix, unconditional)
            return {"kind": "t2i", "example": example, "source": source}
        return {"kind": "caption", "example": self.builder.caption(rec.caption, rec.codes, rec.h, rec.w),
                "source": source}


_INDEX = {name: i for i, name in enumerate(COUNTERS)}


def counter_names(source_names: list[str]) -> tuple[str, ...]:
    """Names of a counters vector: ``COUNTERS``, then per source ``source_<what>/<name>``."""
    return COUNTERS + tuple(f"source_{what}/{name}" for name in source_names for what in SOURCE_COUNTERS)


def _pieces(element: dict[str, Any], seq_len: int, policy: str, num_sources: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The packable pieces of one built element and its counters."""
    counts = np.zeros(len(COUNTERS) + len(SOURCE_COUNTERS) * num_sources, np.int64)
    per_source = len(COUNTERS) + len(SOURCE_COUNTERS) * element["source"]
    counts[per_source] += 1
    if "skip" in element:
        counts[_INDEX["skipped_" + element["skip"]]] += 1
        counts[per_source + 1] += 1
        return [], counts
    kind = element["kind"]
    counts[_INDEX["examples_" + kind]] += 1
    rows = packing.shift(element["example"])
    pieces, cut = packing.fit_to_row(rows, seq_len, policy if kind == "text" else "drop")
    if cut:
        counts[_INDEX["truncated" if pieces else "dropped_too_long"]] += 1
    if not pieces:
        counts[per_source + 1] += 1
    return pieces, counts


class _DocumentIterator(grain.DatasetIterator):
    """Yields ``{"row", "counters"}`` pieces; counters of skipped records ride on the next piece."""

    def __init__(self, parent: grain.DatasetIterator, seq_len: int, policy: str, source_names: list[str]):
        super().__init__(parent)
        self._seq_len = seq_len
        self._policy = policy
        self._names = list(source_names)
        self._pending = np.zeros(len(counter_names(self._names)), np.int64)
        self._pieces: list[dict[str, np.ndarray]] = []
        self._emitted = 0
        # Restoring replays the element whose pieces are being emitted.
        self._state_before = self._parent.get_state()
        self._pending_before = self._pending.copy()

    def _give_up(self, skipped: collections.Counter) -> None:
        (source, _), _ = skipped.most_common(1)[0]
        reasons = {f"{self._names[s]}: {r}": n for (s, r), n in skipped.most_common(5)}
        raise DataError(
            f"data source {self._names[source]!r}: the last {MAX_CONSECUTIVE_SKIPS} records were all "
            f"unusable ({reasons}); check its shards, its kind and the model's image codes and seq_len"
        )

    def _load(self) -> None:
        skipped: collections.Counter = collections.Counter()
        while True:
            self._state_before = self._parent.get_state()
            self._pending_before = self._pending.copy()
            try:
                element = next(self._parent)
            except StopIteration:
                if not self._pending.any():
                    raise
                # A finite stream ends with skips: an empty piece still carries them.
                pieces = [np.zeros((0, 3), np.int32)]
                break
            pieces, counts = _pieces(element, self._seq_len, self._policy, len(self._names))
            self._pending += counts
            if pieces:
                break
            skipped[element["source"], element.get("skip", "too_long_for_seq_len")] += 1
            if sum(skipped.values()) >= MAX_CONSECUTIVE_SKIPS:
                self._give_up(skipped)
        self._pieces = [
            {"row": p, "counters": self._pending if i == 0 else np.zeros_like(self._pending)}
            for i, p in enumerate(pieces)
        ]
        self._pending = np.zeros_like(self._pending)
        self._emitted = 0

    def __next__(self) -> dict[str, np.ndarray]:
        if self._emitted >= len(self._pieces):
            self._load()
        piece = self._pieces[self._emitted]
        self._emitted += 1
        return piece

    def get_state(self) -> dict[str, Any]:
        if self._emitted >= len(self._pieces):
            return {"parent": self._parent.get_state(), "pending": self._pending.tolist(), "emitted": -1}
        return {"parent": self._state_before, "pending": self._pending_before.tolist(), "emitted": self._emitted}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._pending = np.asarray(state["pending"], np.int64)
        self._pieces, self._emitted = [], 0
        if state["emitted"] >= 0:
            self._load()
            self._emitted = state["emitted"]


class _Documents(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, seq_len: int, policy: str, source_names: list[str]):
        super().__init__(parent)
        self._seq_len = seq_len
        self._policy = policy
        self._names = source_names

    def __iter__(self) -> _DocumentIterator:
        return _DocumentIterator(self._parent.__iter__(), self._seq_len, self._policy, self._names)


@dataclasses.dataclass
class BuiltSources:
    """What ``build_dataset`` read: per source its share and what it holds, the
    unreadable shards, and the pixels per code of the image sources."""

    shares: dict[str, ProcessShare]
    bad_shards: list[str]
    infos: dict[str, SourceInfo]
    pixels_per_code: int | None
    size_prefix: bool


def _pixels_per_code(config: ml_collections.ConfigDict, infos: dict[str, SourceInfo]) -> int | None:
    """``data.pixels_per_code``, or the image shards' VQGAN's (they must agree); None
    when neither says."""
    recorded = {name: i.vqgan.pixels_per_code for name, i in infos.items() if i.vqgan is not None}
    for name, value in recorded.items():
        if config.pixels_per_code and value != config.pixels_per_code:
            raise DataError(f"data source {name!r} was made by a VQGAN with {value} pixels per code, "
                            f"data.pixels_per_code is {config.pixels_per_code}; leave it 0 to use the shards'")
    fingerprints = {i.vqgan.fingerprint for i in infos.values() if i.vqgan is not None}
    if len(fingerprints) > 1:
        raise DataError(f"the image sources were made by different VQGANs {sorted(fingerprints)}; "
                        "a model learns the codes of one")
    return config.pixels_per_code or next(iter(recorded.values()), None)


def _size_prefix(config: ml_collections.ConfigDict, infos: dict[str, SourceInfo]) -> bool:
    """``data.size_prefix``; None turns it on when the image sources hold several grids
    (without it a model cannot be told which grid to draw)."""
    grids = sorted({g for i in infos.values() if i.kind == "image" for g in i.grids})
    if config.size_prefix is None:
        return len(grids) > 1
    if not config.size_prefix and len(grids) > 1:
        logging.warning("the image sources hold grids %s but data.size_prefix is False: the model will "
                        "not be told which grid to draw", grids)
    return bool(config.size_prefix)


def _source_dataset(
    spec: SourceSpec, index: int, kind: str, share: ProcessShare, seed: int, num_epochs: int, bad: list[str]
) -> grain.MapDataset:
    source = TolerantSource(share.files)
    bad += source.bad_shards
    if len(source) == 0:
        raise ValueError(f"data source {spec.name!r} ({spec.path}): no readable records for this process")
    ds = grain.MapDataset.source(source)
    if share.record_stride > 1:
        ds = ds[share.record_offset :: share.record_stride]
    return ds.shuffle(seed=seed).repeat(num_epochs or None).map(_Tag(kind, index))


def build_dataset(
    config: ml_collections.ConfigDict,
    tokenizer: Encoder,
    special: SpecialTokens,
    text_vocab_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[grain.IterDataset, BuiltSources]:
    """This process's Grain dataset of numpy batches ``[batch_size / process_count, seq_len]``."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if config.batch_size % process_count:
        raise ValueError(f"data.batch_size {config.batch_size} is not divisible by {process_count} processes")
    specs = [SourceSpec.from_config(i, s) for i, s in enumerate(config.sources)]
    if not specs:
        raise ValueError("data.sources is empty")
    names = [s.name for s in specs]
    if len(set(names)) < len(names):
        raise ValueError(f"data.sources have repeated names {names}; give each a distinct \"name\"")
    files = {s.name: list_shards(s.path) for s in specs}
    infos = {s.name: inspect_source(s.name, s.path, s.kind, files[s.name], config.num_image_codes) for s in specs}
    pixels_per_code = _pixels_per_code(config, infos)
    size_prefix = _size_prefix(config, infos)
    builder = SequenceBuilder(
        tokenizer=tokenizer,
        special=special,
        text_vocab_size=text_vocab_size,
        size_prefix=size_prefix,
        pixels_per_code=pixels_per_code or DEFAULT_PIXELS_PER_CODE,
        text_eos=config.text_eos,
    )
    shares, bad, datasets = {}, [], []
    for i, spec in enumerate(specs):
        shares[spec.name] = process_share(files[spec.name], process_index, process_count)
        datasets.append(_source_dataset(spec, i, infos[spec.name].kind, shares[spec.name],
                                        config.seed + 1000 * i, config.num_epochs, bad))
    mixed = grain.MapDataset.mix(datasets, [s.weight for s in specs])
    built = mixed.random_map(
        _BuildExample(builder, config.t2i_ratio, config.cfg_drop, config.num_image_codes),
        seed=config.seed,
    )
    it = built.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=64))
    rows = packing.pack(
        _Documents(it, config.seq_len, config.long_document, names),
        config.seq_len,
        num_bins=config.packing_bins,
        seed=config.seed,
        pad_id=special.pad,
    )
    batches = rows.batch(config.batch_size // process_count, drop_remainder=True)
    if config.worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # Grain's worker processes read absl flags; outside absl.app there are none to parse.
            flags.FLAGS.mark_as_parsed()
        batches = batches.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return batches, BuiltSources(shares=shares, bad_shards=bad, infos=infos, pixels_per_code=pixels_per_code,
                                 size_prefix=size_prefix)


class DataIterator:
    """Batches as global jax.Arrays, running counters, and a resumable state.

    ``get_state()`` is JSON-serializable (save it next to the training checkpoint);
    ``set_state()`` continues with exactly the batches an uninterrupted run would give.
    """

    def __init__(
        self,
        dataset: grain.IterDataset,
        text_vocab_size: int,
        mesh: Mesh | None = None,
        bad_shards: list[str] | None = None,
        built: BuiltSources | None = None,
        max_skip_fraction: float = 1.0,
    ):
        self._iterator = iter(dataset)
        self._text_vocab_size = text_vocab_size
        self._sharding = None if mesh is None else NamedSharding(mesh, logical_to_spec(("batch", None), mesh=mesh))
        self.bad_shards = list(bad_shards or [])
        self.built = built
        self._max_skip_fraction = max_skip_fraction
        self._names = counter_names(list(built.infos) if built is not None else [])
        self._counters = dict.fromkeys(self._names + TOKEN_COUNTERS, 0)

    @property
    def counters(self) -> dict[str, int]:
        """Totals since the start of training (this process), incl. unreadable shards."""
        return dict(self._counters, skipped_shards=len(self.bad_shards))

    def __iter__(self) -> "DataIterator":
        return self

    def _check_skips(self) -> None:
        for name in (self.built.infos if self.built is not None else ()):
            seen = self._counters[f"source_records/{name}"]
            unusable = self._counters[f"source_unusable/{name}"]
            if seen >= SKIP_CHECK_RECORDS and unusable > self._max_skip_fraction * seen:
                reasons = {k: v for k, v in self._counters.items()
                           if v and (k.startswith("skipped_") or k == "dropped_too_long")}
                raise DataError(
                    f"data source {name!r}: {unusable} of its first {seen} records could not be used "
                    f"(more than data.max_skip_fraction={self._max_skip_fraction}; all sources: {reasons}); "
                    "check the shards, the model's image codes and data.seq_len"
                )

    def _count(self, batch: dict[str, np.ndarray], doc_counts: np.ndarray) -> None:
        for name, n in zip(self._names, doc_counts.sum(axis=0)):
            self._counters[name] += int(n)
        self._check_skips()
        real = batch["segment_ids"] > 0
        image = image_target_mask(batch["targets"], self._text_vocab_size) & real
        text = real & ~image
        loss = batch["loss_mask"] > 0
        self._counters["tokens_text"] += int(text.sum())
        self._counters["tokens_image"] += int(image.sum())
        self._counters["loss_tokens_text"] += int((text & loss).sum())
        self._counters["loss_tokens_image"] += int((image & loss).sum())
        self._counters["padding"] += int((~real).sum())

    def next_numpy(self) -> dict[str, np.ndarray]:
        """This process's part of the next batch, as numpy arrays."""
        batch = next(self._iterator)
        self._count(batch, batch["counters"])
        return {k: np.asarray(batch[k], np.int32) for k in BATCH_KEYS}

    def __next__(self) -> dict[str, jax.Array]:
        local = self.next_numpy()
        if self._sharding is None:
            return {k: jax.numpy.asarray(v) for k, v in local.items()}
        return {k: jax.make_array_from_process_local_data(self._sharding, v) for k, v in local.items()}

    def get_state(self) -> dict[str, Any]:
        return {"grain": self._iterator.get_state(), "counters": dict(self._counters)}

    def close(self) -> None:
        """Stops Grain's prefetch threads and worker processes."""
        self._iterator.close()

    def __enter__(self) -> "DataIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_state(self, state: dict[str, Any]) -> None:
        self._iterator.set_state(state["grain"])
        self._counters = dict.fromkeys(self._names + TOKEN_COUNTERS, 0) | dict(state["counters"])


def make_iterator(
    config: ml_collections.ConfigDict,
    tokenizer: Encoder,
    special: SpecialTokens,
    text_vocab_size: int,
    mesh: Mesh | None = None,
) -> DataIterator:
    """The trainer's entry point: ``config`` is ``config.data``."""
    if not 0.0 <= config.max_skip_fraction <= 1.0:
        raise ValueError(f"data.max_skip_fraction must be in [0, 1], got {config.max_skip_fraction}")
    dataset, built = build_dataset(config, tokenizer, special, text_vocab_size)
    return DataIterator(dataset, text_vocab_size, mesh=mesh, bad_shards=built.bad_shards, built=built,
                        max_skip_fraction=config.max_skip_fraction)
