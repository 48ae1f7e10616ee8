"""The multimodal vocabulary: text tokens, then ``num_image_codes`` image-code tokens.

Image code ``c`` is token ``text_vocab_size + c`` where ``text_vocab_size`` is the
base model's embedding row count (which may exceed the tokenizer's size, e.g. Qwen2.5:
151936 rows, 151665 tokenizer entries).

Three recipe tokens mark images: ``<boi>`` (begin of image), ``<eoi>`` (end of image)
and ``<unconditional>`` (the classifier-free-guidance prompt). Liquid adds no new
text tokens; it reuses reserved tokens of the base tokenizer. Per family:

========  =================================  ==================================
family    token used (by name)               id in the released tokenizer
========  =================================  ==================================
gemma(2)  <unused0> / <unused1> / <unused2>  7 / 8 / 9 (upstream renames them
          (or already renamed <boi> ...)     <boi>, <eoi>, <unconditional>)
llama     <|reserved_special_token_0|>,      128002, 128003, 128005 (Llama 3.1+;
          _1, _2                             Llama 3.0: 128002, 128003, 128004)
qwen2     <|vision_start|>, <|vision_end|>,  151652, 151653, 151654
          <|vision_pad|>
========  =================================  ==================================

A checkpoint's own files come first (``special_tokens_from_files``): the recipe ids
recorded in config.json, then the tokens named in tokenizer_config.json /
special_tokens_map.json / config.json as transformers reads them, then the tokenizer by
name; the table above is the fallback.

Llama 3 reserves these tokens for exactly this use and no released checkpoint
trains them. Qwen2.5's text models never see the vision tokens (they exist for
Qwen2-VL), and their names say what they mark. Ids are looked up by name when a
tokenizer is at hand, so both Llama 3.0 and 3.1+ layouts come out right.
BOS/EOS/PAD: Gemma 2/1/0; Llama <|begin_of_text|>/<|end_of_text|>/
<|finetune_right_pad_id|> (EOS when absent); Qwen2.5 has no BOS in its tokenizer,
its config names <|endoftext|> for BOS, EOS and PAD, and so do we.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from liquid_jax.model.config import SpecialTokens
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.tokenizer.text import HF_TOKENIZER_CONFIG_FILE, TextTokenizer

# Names of the recipe tokens as they appear in prompts (upstream's spelling).
RECIPE_TOKEN_NAMES = {"boi": "<boi>", "eoi": "<eoi>", "unconditional": "<unconditional>"}


@dataclasses.dataclass(frozen=True)
class _Role:
    pieces: tuple[str, ...]  # candidate piece names, first found wins
    fallback: int  # id in the family's released tokenizer


_FAMILY_TOKENS: dict[str, dict[str, _Role]] = {
    "gemma": {
        "bos": _Role(("<bos>",), 2),
        "eos": _Role(("<eos>",), 1),
        "pad": _Role(("<pad>",), 0),
        "boi": _Role(("<boi>", "<unused0>"), 7),
        "eoi": _Role(("<eoi>", "<unused1>"), 8),
        "unconditional": _Role(("<unconditional>", "<unused2>"), 9),
    },
    "llama": {
        "bos": _Role(("<|begin_of_text|>",), 128000),
        "eos": _Role(("<|end_of_text|>",), 128001),
        "pad": _Role(("<|finetune_right_pad_id|>", "<|end_of_text|>"), 128004),
        "boi": _Role(("<|reserved_special_token_0|>",), 128002),
        "eoi": _Role(("<|reserved_special_token_1|>",), 128003),
        "unconditional": _Role(("<|reserved_special_token_2|>",), 128005),
    },
    "qwen2": {
        "bos": _Role(("<|endoftext|>",), 151643),
        "eos": _Role(("<|endoftext|>",), 151643),
        "pad": _Role(("<|endoftext|>",), 151643),
        "boi": _Role(("<|vision_start|>",), 151652),
        "eoi": _Role(("<|vision_end|>",), 151653),
        "unconditional": _Role(("<|vision_pad|>",), 151654),
    },
}
_FAMILY_TOKENS["gemma2"] = _FAMILY_TOKENS["gemma"]
RECIPE_ROLES = ("boi", "eoi", "unconditional")
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ASSUMED = "the family's released id (assumed)"


def default_special_tokens(family: str, text_tokenizer: TextTokenizer | None = None) -> SpecialTokens:
    """The recipe's token ids for a model family (see the module docstring).

    With ``text_tokenizer`` the ids are looked up by piece name and a missing piece is
    an error; without it the ids of the family's released tokenizer are returned.
    """
    if family not in _FAMILY_TOKENS:
        raise ValueError(f"no special-token defaults for family {family!r}; "
                         f"known: {sorted(_FAMILY_TOKENS)}")
    ids = {}
    for role, spec in _FAMILY_TOKENS[family].items():
        if text_tokenizer is None:
            ids[role] = spec.fallback
            continue
        found = [text_tokenizer.piece_to_id(p) for p in spec.pieces]
        found = [i for i in found if i is not None]
        if not found:
            raise ValueError(
                f"tokenizer {text_tokenizer.path} has none of {spec.pieces} for the {role} "
                f"token of family {family!r}"
            )
        ids[role] = found[0]
    return SpecialTokens(**ids)


def _read_json(directory: str | None, name: str) -> dict[str, Any]:
    path = None if directory is None else os.path.join(directory, name)
    if path is None or not os.path.isfile(path):
        return {}
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from e


def _content(entry: Any) -> str | None:
    """A special token as tokenizer files store it: a string or an AddedToken dict."""
    return entry.get("content") if isinstance(entry, dict) else entry


def special_tokens_from_files(
    family: str,
    hf_config: Mapping[str, Any],
    tokenizer: TextTokenizer | None = None,
    tokenizer_dir: str | None = None,
) -> tuple[SpecialTokens, dict[str, str]]:
    """The recipe's token ids of a checkpoint, and where each one came from.

    Per role, the first source that names it wins:

    * ``<boi>`` / ``<eoi>`` / ``<unconditional>``: ``{role}_token_id`` in config.json
      (our exports), then a token of that name in the tokenizer (``added_tokens_decoder``
      of tokenizer_config.json, or a piece: upstream renames ``<unused0..2>``), then the
      family's reserved pieces (module docstring);
    * bos / eos / pad: ``{role}_token`` in tokenizer_config.json, then in
      special_tokens_map.json, then ``{role}_token_id`` in config.json (the first of a
      list), then the tokenizer model's own ids, then (pad only) eos, then the family's
      pieces;
    * finally the family's released id, reported as assumed.
    """
    if family not in _FAMILY_TOKENS:
        raise ValueError(f"no special-token defaults for family {family!r}; known: {sorted(_FAMILY_TOKENS)}")
    tokenizer_config = _read_json(tokenizer_dir, HF_TOKENIZER_CONFIG_FILE)
    special_map = _read_json(tokenizer_dir, SPECIAL_TOKENS_MAP_FILE)
    added = {_content(v): int(k) for k, v in tokenizer_config.get("added_tokens_decoder", {}).items()}

    def by_name(name: str | None) -> int | None:
        if not name:
            return None
        if name in added:
            return added[name]
        return tokenizer.piece_to_id(name) if tokenizer is not None else None

    def config_id(role: str) -> int | None:
        value = hf_config.get(f"{role}_token_id")
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return None if value is None else int(value)

    ids: dict[str, int] = {}
    sources: dict[str, str] = {}
    for role, spec in _FAMILY_TOKENS[family].items():
        if role in RECIPE_ROLES:
            candidates = [(config_id(role), "config.json"),
                          (by_name(RECIPE_TOKEN_NAMES[role]), "the tokenizer's files")]
        else:
            own = None if tokenizer is None else getattr(tokenizer, f"{role}_id")
            candidates = [
                (by_name(_content(tokenizer_config.get(f"{role}_token"))), HF_TOKENIZER_CONFIG_FILE),
                (by_name(_content(special_map.get(f"{role}_token"))), SPECIAL_TOKENS_MAP_FILE),
                (config_id(role), "config.json"),
                (own, "the tokenizer model"),
            ]
            if role == "pad":
                candidates.append((ids.get("eos"), "eos (no pad token named)"))
        candidates += [(by_name(p), f"the tokenizer's {p}") for p in spec.pieces]
        candidates.append((spec.fallback, ASSUMED))
        ids[role], sources[role] = next((i, where) for i, where in candidates if i is not None)
    return SpecialTokens(**ids), sources


class MultimodalVocab:
    """Text tokenizer + image codes + the recipe's special tokens."""

    def __init__(
        self,
        text_tokenizer: TextTokenizer,
        special: SpecialTokens,
        text_vocab_size: int,
        num_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    ):
        if text_tokenizer.vocab_size > text_vocab_size:
            raise ValueError(
                f"tokenizer {text_tokenizer.path} has {text_tokenizer.vocab_size} entries, "
                f"more than the text vocabulary size {text_vocab_size}"
            )
        for role, token_id in dataclasses.asdict(special).items():
            if not 0 <= token_id < text_tokenizer.vocab_size:
                raise ValueError(
                    f"special token {role}={token_id} is outside the tokenizer "
                    f"{text_tokenizer.path} ({text_tokenizer.vocab_size} entries)"
                )
        self.text = text_tokenizer
        self.special = special
        self.text_vocab_size = int(text_vocab_size)
        self.num_image_codes = int(num_image_codes)
        self._recipe_ids = {name: getattr(special, role) for role, name in RECIPE_TOKEN_NAMES.items()}
        self._recipe_names = {i: n for n, i in self._recipe_ids.items()}
        self._recipe_pattern = re.compile("(" + "|".join(map(re.escape, self._recipe_ids)) + ")")

    @property
    def vocab_size(self) -> int:
        """Text tokens plus image codes (the model's real, unpadded vocabulary)."""
        return self.text_vocab_size + self.num_image_codes

    def image_tokens(self, codes: np.ndarray | Sequence[int]) -> np.ndarray:
        """Image codes (any shape) -> token ids (int32)."""
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_image_codes):
            bad = codes[(codes < 0) | (codes >= self.num_image_codes)]
            raise ValueError(
                f"image codes {bad[:5].tolist()} are outside [0, {self.num_image_codes})"
            )
        return (codes.astype(np.int64) + self.text_vocab_size).astype(np.int32)

    def image_codes(self, tokens: np.ndarray | Sequence[int]) -> np.ndarray:
        """Token ids (any shape, all image tokens) -> image codes (int32)."""
        tokens = np.asarray(tokens)
        bad = tokens[~self.is_image_token(tokens)]
        if bad.size:
            raise ValueError(
                f"tokens {bad[:5].tolist()} are not image tokens "
                f"[{self.text_vocab_size}, {self.vocab_size})"
            )
        return (tokens.astype(np.int64) - self.text_vocab_size).astype(np.int32)

    def is_image_token(self, tokens: np.ndarray | Sequence[int] | int) -> np.ndarray:
        tokens = np.asarray(tokens)
        return (tokens >= self.text_vocab_size) & (tokens < self.vocab_size)

    def encode_text(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of ``text``; the names <boi>, <eoi>, <unconditional> become their ids."""
        ids = [self.special.bos] if add_bos else []
        for part in self._recipe_pattern.split(text):
            if part in self._recipe_ids:
                ids.append(self._recipe_ids[part])
            elif part:
                ids.extend(self.text.encode(part))
        return ids

    def segments(self, ids: Iterable[int]) -> list[str | np.ndarray]:
        """Splits a mixed sequence into text strings and arrays of image codes.

        Recipe tokens are rendered by name inside the text; BOS/EOS/PAD vanish;
        ids of the text range the tokenizer does not know (embedding padding of the
        base model) and ids past the vocabulary raise ValueError.
        """
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).reshape(-1)
        out: list[str | np.ndarray] = []
        text_run: list[int] = []
        pieces: list[str] = []

        def flush_text():
            if text_run:
                pieces.append(self.text.decode(text_run))
                text_run.clear()

        def flush_pieces():
            flush_text()
            if pieces:
                out.append("".join(pieces))
                pieces.clear()

        image = self.is_image_token(ids)
        start = 0
        while start < len(ids):
            stop = start
            while stop < len(ids) and image[stop] == image[start]:
                stop += 1
            if image[start]:
                flush_pieces()
                out.append(self.image_codes(ids[start:stop]))
            else:
                for token in ids[start:stop].tolist():
                    if token in self._recipe_names:
                        flush_text()
                        pieces.append(self._recipe_names[token])
                    else:
                        text_run.append(token)
            start = stop
        flush_pieces()
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a mixed sequence; each run of image codes shows as ``<image:N codes>``."""
        return "".join(
            s if isinstance(s, str) else f"<image:{s.size} codes>" for s in self.segments(ids)
        )
