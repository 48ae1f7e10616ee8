"""Paths as every layer below the CLI takes them: relative, absolute or URL-style.

Local paths are made absolute once, where a library needs it (Orbax and TensorStore refuse
relative destinations); URL-style paths (``gs://bucket/run``) pass through ``etils.epath``
unchanged. ``file:///abs/path`` is the local path ``/abs/path`` (epath has no ``file://``).
"""

from __future__ import annotations

import os
import re

from etils import epath

from liquid_jax.errors import UserError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_FILE_URL = "file://"


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a remote location (``gs://``, ``s3://``, ...)."""
    text = os.fspath(path)
    return bool(_URL.match(text)) and not text.startswith(_FILE_URL)


def resolve(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: local paths absolute (``~`` expanded), URLs as given."""
    text = os.fspath(path).removeprefix(_FILE_URL)
    if is_url(text):
        return epath.Path(text)
    return epath.Path(os.path.abspath(os.path.expanduser(text)))


def local(path: str | os.PathLike, what: str) -> str:
    """An absolute local path; a URL is refused with a message naming ``what``."""
    if is_url(path):
        raise UserError(f"{what} {os.fspath(path)} must be a local directory; copy it to this machine first")
    return os.fspath(resolve(path))


TEMPORARY_MARK = ".tmp-"  # in the names write_atomic writes before renaming


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` through a temporary sibling and a rename, so that an
    interrupted write (even ``kill -9``) never leaves a half-written file at ``path``."""
    target = resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}{TEMPORARY_MARK}{os.getpid()}"
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.rename(target)
