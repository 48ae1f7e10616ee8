"""Text tokenizers: SentencePiece (Gemma) and Hugging Face tokenizer.json (Llama 3, Qwen2.5).

Both backends expose the same small ``TextTokenizer`` protocol. They know nothing
about image codes; ``liquid_jax.tokenizer.vocab.MultimodalVocab`` adds those.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
from etils import epath

from liquid_jax import paths

SENTENCEPIECE_FILE = "tokenizer.model"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# Every file of a tokenizer in a Hugging Face model directory.
TOKENIZER_FILES = (
    SENTENCEPIECE_FILE, HF_TOKENIZER_FILE, HF_TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "chat_template.jinja",
)


@runtime_checkable
class TextTokenizer(Protocol):
    """What the rest of the package needs from a text tokenizer."""

    path: str

    @property
    def vocab_size(self) -> int: ...

    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int | None: ...

    @property
    def pad_id(self) -> int | None: ...

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def id_to_piece(self, token_id: int) -> str: ...

    def piece_to_id(self, piece: str) -> int | None: ...


def _check_ids(ids: Iterable[int], vocab_size: int, path: str) -> list[int]:
    ids = [int(i) for i in np.asarray(list(ids), dtype=np.int64).reshape(-1)]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"token ids {bad[:5]} are outside the text vocabulary [0, {vocab_size}) of {path}"
        )
    return ids


def _with_bos(ids: list[int], bos_id: int | None, add_bos: bool, path: str) -> list[int]:
    if not add_bos:
        return ids
    if bos_id is None:
        raise ValueError(f"tokenizer {path} has no BOS token; call encode with add_bos=False")
    return [bos_id] + ids


class SentencePieceTokenizer:
    """A SentencePiece ``.model`` file (Gemma, Gemma 2)."""

    def __init__(self, path: str | os.PathLike):
        import sentencepiece

        self.path = os.fspath(path)
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(self.path)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{self.path}: not a SentencePiece model ({e})") from e

    @staticmethod
    def _optional(token_id: int) -> int | None:
        return None if token_id < 0 else token_id

    @property
    def vocab_size(self) -> int:
        return self._sp.GetPieceSize()

    @property
    def bos_id(self) -> int | None:
        return self._optional(self._sp.bos_id())

    @property
    def eos_id(self) -> int | None:
        return self._optional(self._sp.eos_id())

    @property
    def pad_id(self) -> int | None:
        return self._optional(self._sp.pad_id())

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return _with_bos(list(self._sp.EncodeAsIds(text)), self.bos_id, add_bos, self.path)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; control tokens (bos, eos, pad) decode to nothing."""
        return self._sp.DecodeIds(_check_ids(ids, self.vocab_size, self.path))

    def id_to_piece(self, token_id: int) -> str:
        _check_ids([token_id], self.vocab_size, self.path)
        return self._sp.IdToPiece(int(token_id))

    def piece_to_id(self, piece: str) -> int | None:
        token_id = self._sp.PieceToId(piece)
        if token_id == self._sp.unk_id() and piece != self._sp.IdToPiece(token_id):
            return None
        return token_id


def _token_content(entry: str | dict | None) -> str | None:
    """tokenizer_config.json stores special tokens as a string or an AddedToken dict."""
    if isinstance(entry, dict):
        return entry.get("content")
    return entry


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (Llama 3, Qwen2.5), read with ``tokenizers``.

    BOS / EOS / PAD come from ``tokenizer_config.json`` next to the file when present;
    explicit token strings override it. Any of them may be absent (Qwen has no BOS).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
    ):
        import tokenizers

        self.path = os.fspath(path)
        try:
            self._tok = tokenizers.Tokenizer.from_file(self.path)
        except Exception as e:  # the Rust side raises a bare Exception
            raise ValueError(f"{self.path}: not a tokenizer.json file ({e})") from e
        config = {}
        config_path = os.path.join(os.path.dirname(self.path), HF_TOKENIZER_CONFIG_FILE)
        if os.path.exists(config_path):
            with open(config_path) as f:
                config = json.load(f)
        self._special = {}
        for name, explicit in (("bos", bos_token), ("eos", eos_token), ("pad", pad_token)):
            content = explicit or _token_content(config.get(f"{name}_token"))
            token_id = self.piece_to_id(content) if content else None
            if content and token_id is None:
                raise ValueError(f"{self.path}: {name} token {content!r} is not in the vocabulary")
            self._special[name] = token_id

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_id(self) -> int | None:
        return self._special["bos"]

    @property
    def eos_id(self) -> int | None:
        return self._special["eos"]

    @property
    def pad_id(self) -> int | None:
        return self._special["pad"]

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        # The file's post-processor (e.g. Llama 3 adding <|begin_of_text|>) is bypassed;
        # BOS is added here only, so both backends behave alike.
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return _with_bos(list(ids), self.bos_id, add_bos, self.path)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special added tokens (bos, eos, pad, ...) decode to nothing."""
        return self._tok.decode(_check_ids(ids, self.vocab_size, self.path), skip_special_tokens=True)

    def id_to_piece(self, token_id: int) -> str:
        piece = self._tok.id_to_token(int(token_id))
        if piece is None:
            raise ValueError(f"token id {token_id} is not in the vocabulary of {self.path}")
        return piece

    def piece_to_id(self, piece: str) -> int | None:
        return self._tok.token_to_id(piece)


def find_tokenizer_file(directory: str | os.PathLike) -> str | None:
    """The tokenizer file of a Hugging Face model directory, or None.

    ``tokenizer.model`` (SentencePiece, Gemma) is preferred over ``tokenizer.json``
    because it is the original; Llama 3 and Qwen2.5 directories have only the latter.
    """
    for name in (SENTENCEPIECE_FILE, HF_TOKENIZER_FILE):
        candidate = os.path.join(os.fspath(directory), name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _local_copy(url: str) -> str:
    """A bucket's tokenizer file or folder copied to a local temporary folder (the
    tokenizer libraries read local files only)."""
    source = epath.Path(url)
    target = epath.Path(tempfile.mkdtemp(prefix="liquid_jax_tokenizer_"))
    if not source.is_dir():
        source.copy(target / source.name)
        return os.fspath(target / source.name)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            (source / name).copy(target / name)
    return os.fspath(target)


def load_text_tokenizer(path_or_dir: str | os.PathLike) -> TextTokenizer:
    """A tokenizer from a ``.model`` / ``.json`` file or a Hugging Face model directory
    (local, or a URL such as gs://)."""
    path = os.fspath(path_or_dir)
    if paths.is_url(path):
        path = _local_copy(path)
    if os.path.isdir(path):
        found = find_tokenizer_file(path)
        if found is None:
            raise FileNotFoundError(
                f"{path} has neither {SENTENCEPIECE_FILE} nor {HF_TOKENIZER_FILE}"
            )
        if found.endswith(SENTENCEPIECE_FILE) and os.path.isfile(
            os.path.join(path, HF_TOKENIZER_FILE)
        ):
            try:
                return SentencePieceTokenizer(found)
            except ValueError:  # e.g. a tiktoken file named tokenizer.model
                return HFTokenizer(os.path.join(path, HF_TOKENIZER_FILE))
        path = found
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    if path.endswith(".json"):
        return HFTokenizer(path)
    return SentencePieceTokenizer(path)


def tokenizer_files(directory: str | os.PathLike) -> Sequence[str]:
    """Names of the tokenizer files present in a Hugging Face model directory."""
    return [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(os.fspath(directory), n))]


def tokenizer_sources(path_or_dir: str | os.PathLike) -> dict[str, str]:
    """The files of the tokenizer ``load_text_tokenizer(path_or_dir)`` reads, by the name
    each has in a model directory (a lone ``sp.model`` becomes ``tokenizer.model``, a lone
    ``tokenizer.json`` brings the tokenizer files next to it)."""
    path = os.fspath(path_or_dir)
    if paths.is_url(path):
        path = _local_copy(path)
    if os.path.isdir(path):
        return {n: os.path.join(path, n) for n in tokenizer_files(path)}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    if path.endswith(".json"):
        folder = os.path.dirname(path)
        siblings = {n: os.path.join(folder, n) for n in tokenizer_files(folder) if n != SENTENCEPIECE_FILE}
        return {**siblings, HF_TOKENIZER_FILE: path}
    return {SENTENCEPIECE_FILE: path}
