"""The record schema of pre-tokenized shards and its (de)serialization.

Shards are ArrayRecord files; each record is a msgpack map (language-neutral, no
pickle). Two kinds:

* image record: ``{"v": 1, "caption": str, "codes": bytes, "h": int, "w": int,
  "key": str}`` -- ``codes`` are the VQGAN codes of an ``h x w`` grid in raster order,
  little-endian uint16 (codebooks up to 65536 entries);
* text record: ``{"v": 1, "text": str, "key": str}`` -- raw text; tokenization
  happens in the input pipeline so one set of shards serves every base tokenizer.

``decode_*`` validate everything a training step relies on and raise ``RecordError``
with a short machine-readable ``reason`` (used as a counter name) when a record cannot
be used.
"""

from __future__ import annotations

import dataclasses
import re

import msgpack
import numpy as np

SCHEMA_VERSION = 1
SHARD_SUFFIX = ".array_record"
_CODE_DTYPE = np.dtype("<u2")


class RecordError(ValueError):
    """A record that cannot be used; ``reason`` names the failure class."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image (as VQGAN codes) with its caption."""

    caption: str
    codes: np.ndarray  # uint16 [h * w], raster order
    h: int
    w: int
    key: str


@dataclasses.dataclass(frozen=True)
class TextRecord:
    """One text document."""

    text: str
    key: str


def encode_image_record(record: ImageRecord) -> bytes:
    """Serializes an image record; rejects codes that do not fit the declared grid."""
    codes = np.asarray(record.codes)
    if codes.size != record.h * record.w:
        raise ValueError(
            f"record {record.key!r}: {codes.size} codes do not fill a {record.h}x{record.w} grid"
        )
    if codes.size and (codes.min() < 0 or codes.max() > np.iinfo(_CODE_DTYPE).max):
        raise ValueError(f"record {record.key!r}: codes outside the uint16 range")
    return msgpack.packb(
        {
            "v": SCHEMA_VERSION,
            "caption": record.caption,
            "codes": codes.astype(_CODE_DTYPE).reshape(-1).tobytes(),
            "h": int(record.h),
            "w": int(record.w),
            "key": record.key,
        },
        use_bin_type=True,
    )


def encode_text_record(record: TextRecord) -> bytes:
    """Serializes a text record."""
    return msgpack.packb(
        {"v": SCHEMA_VERSION, "text": record.text, "key": record.key}, use_bin_type=True
    )


def _unpack(data: bytes) -> dict:
    # raw=True keeps strings as bytes so that invalid UTF-8 is reported per field
    # instead of failing the whole unpack with a generic error.
    try:
        obj = msgpack.unpackb(data, raw=True)
    except Exception as e:  # msgpack raises several unrelated exception types
        raise RecordError("corrupt", f"not a msgpack record ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise RecordError("corrupt", f"record is a {type(obj).__name__}, not a map")
    fields = {k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    if fields.get("v") != SCHEMA_VERSION:
        raise RecordError("corrupt", f"unknown schema version {fields.get('v')!r}")
    return fields


def _text_field(fields: dict, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, bytes):
        raise RecordError("corrupt", f"field {name!r} missing or not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordError("bad_utf8", f"field {name!r}: {e}") from e


def _int_field(fields: dict, name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or value <= 0:
        raise RecordError("corrupt", f"field {name!r} missing or not a positive integer")
    return value


def decode_image_record(data: bytes, num_image_codes: int) -> ImageRecord:
    """Parses and validates an image record (grid, code range, non-empty caption)."""
    fields = _unpack(data)
    key = _text_field(fields, "key")
    caption = _text_field(fields, "caption")
    if not caption.strip():
        raise RecordError("empty_caption", f"record {key!r}")
    h, w = _int_field(fields, "h"), _int_field(fields, "w")
    raw = fields.get("codes")
    if not isinstance(raw, bytes) or len(raw) != 2 * h * w:
        raise RecordError("corrupt", f"record {key!r}: codes do not fill a {h}x{w} grid")
    codes = np.frombuffer(raw, dtype=_CODE_DTYPE)
    if int(codes.max()) >= num_image_codes:
        raise RecordError(
            "code_out_of_range", f"record {key!r}: code {int(codes.max())} >= {num_image_codes}"
        )
    return ImageRecord(caption=caption, codes=codes, h=h, w=w, key=key)


def decode_text_record(data: bytes) -> TextRecord:
    """Parses and validates a text record (UTF-8, non-empty)."""
    fields = _unpack(data)
    key = _text_field(fields, "key")
    text = _text_field(fields, "text")
    if not text.strip():
        raise RecordError("empty_text", f"record {key!r}")
    return TextRecord(text=text, key=key)


def shard_name(prefix: str, index: int, count: int) -> str:
    """``{prefix}-00003-of-00010.array_record``."""
    return f"{prefix}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})" + re.escape(SHARD_SUFFIX) + "$")


def is_shard_name(name: str) -> bool:
    """Whether ``name`` follows ``shard_name``'s pattern."""
    return _SHARD_RE.search(name) is not None
