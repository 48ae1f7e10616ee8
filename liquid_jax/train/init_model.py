"""Where a run starts: the init model's parameters, tokenizer and image format, and the
image format the run's data teaches on top of it.

``init.kind`` is "scratch", "checkpoint" (a liquid_jax checkpoint or another run's
workdir) or "hf" (a Hugging Face directory, extended by the model's image codes on the
fly). The stored vocabulary padding may differ from the config's. The tokenizer is
``config.tokenizer``, else the init model's, and a copy is kept in the workdir so that
every step can be exported on its own.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from etils import epath
from flax import nnx

from liquid_jax import paths
from liquid_jax.checkpoint import model as model_checkpoint
from liquid_jax.checkpoint import train_state
from liquid_jax.checkpoint.card import TOKENIZER_SUBDIR, is_checkpoint
from liquid_jax.convert import hf as hf_convert
from liquid_jax.data import pipeline
from liquid_jax.errors import UserError
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.image_format import DEFAULT_PIXELS_PER_CODE, ImageFormat
from liquid_jax.tokenizer.text import tokenizer_sources
from liquid_jax.train import state as state_lib


def _init_tokenizer_dir(config: ml_collections.ConfigDict) -> str | None:
    path = config.init.path
    if config.init.kind == "hf":
        return hf_convert.tokenizer_location(paths.local(path, "init.path"))
    folder = model_checkpoint.tokenizer_dir(path)
    return None if folder is None else str(folder)


def tokenizer_path(config: ml_collections.ConfigDict, workdir: str | epath.PathLike) -> str:
    """``config.tokenizer``; else the init model's tokenizer; else the workdir's copy."""
    if config.tokenizer:
        return config.tokenizer
    found = _init_tokenizer_dir(config) if config.init.kind != "scratch" else None
    kept = paths.resolve(workdir) / TOKENIZER_SUBDIR
    if found is None and kept.is_dir():
        found = str(kept)
    if found is None:
        raise UserError("config.tokenizer is empty and there is no tokenizer to take it from; set "
                        "--config.tokenizer=<tokenizer.model / tokenizer.json / Hugging Face directory>")
    return found


def keep_tokenizer(source: str, workdir: str | epath.PathLike) -> None:
    """Copies the tokenizer's files into ``<workdir>/tokenizer`` (process 0), or checks that
    a resumed run uses the same ones."""
    kept = paths.resolve(workdir) / TOKENIZER_SUBDIR
    files = tokenizer_sources(source)
    if kept.exists():
        changed = [n for n, f in files.items()
                   if not (kept / n).exists() or (kept / n).read_bytes() != epath.Path(f).read_bytes()]
        if changed and os.path.abspath(source) != os.fspath(kept):
            raise train_state.IncompatibleCheckpointError(
                f"{workdir} was trained with another tokenizer ({', '.join(changed)} differ from {source}); "
                "use a new --workdir or the run's own tokenizer")
        return
    if jax.process_index() == 0:
        kept.mkdir(parents=True)
        for name, f in files.items():
            epath.Path(f).copy(kept / name)


def init_image_format(config: ml_collections.ConfigDict) -> ImageFormat | None:
    """The image format recorded by the model training starts from (None from scratch)."""
    kind, path = config.init.kind, config.init.path
    if kind == "hf":
        return hf_convert.hf_image_format(path)
    if kind == "checkpoint" and train_state.is_workdir(path) and not is_checkpoint(path):
        return model_checkpoint.workdir_image_format(path)
    if kind == "checkpoint":
        return model_checkpoint.read_model_card(path)[1]
    return None


def run_image_format(config: ml_collections.ConfigDict, data: Any, init: ImageFormat | None) -> ImageFormat:
    """What the run teaches the model about images: the image shards' VQGAN, pixels per
    code and grids (after those the init model was trained on), and the size prefix."""
    built = getattr(data, "built", None)
    images = [i for i in built.infos.values() if i.kind == "image"] if built is not None else []
    fingerprint = next((i.vqgan.fingerprint for i in images if i.vqgan is not None), None)
    if init is not None and init.vqgan_fingerprint and fingerprint and fingerprint != init.vqgan_fingerprint:
        raise pipeline.DataError(
            f"init.path {config.init.path} learned the codes of VQGAN {init.vqgan_fingerprint}, the image "
            f"shards hold codes of VQGAN {fingerprint}; pre-tokenize with the model's VQGAN")
    grids = [g for i in images for g in i.grids] + list(init.grids if init is not None else ())
    size_prefix = built.size_prefix if built is not None else bool(config.data.size_prefix)
    pixels_per_code = built.pixels_per_code if images else None
    pixels_per_code = pixels_per_code or (init.pixels_per_code if init is not None else None)
    if pixels_per_code is None and size_prefix:  # the size sentences were written with it
        pixels_per_code = config.data.pixels_per_code or DEFAULT_PIXELS_PER_CODE
    return ImageFormat(
        size_prefix=size_prefix, pixels_per_code=pixels_per_code,
        grids=tuple(dict.fromkeys(grids)),
        vqgan_fingerprint=fingerprint or (init.vqgan_fingerprint if init is not None else None),
    )


def _load_init(config: ml_collections.ConfigDict, model: TransformerConfig, mesh) -> tuple[TransformerConfig, Any]:
    """(stored config, params on ``mesh``) of ``init.path``, with ``model``'s vocabulary padding."""
    path, dtype, pad = config.init.path, model.param_dtype, model.vocab_pad_multiple
    if config.init.kind == "hf":
        return hf_convert.load_hf_params(path, dtype=dtype, extend_image_codes=model.num_image_codes,
                                         vocab_pad_multiple=pad, mesh=mesh)
    if train_state.is_workdir(path) and not is_checkpoint(path):
        _, stored, _, params = model_checkpoint.load_workdir(path, dtype=dtype, mesh=mesh, vocab_pad_multiple=pad)
    else:
        stored, _, params = model_checkpoint.load_model(path, dtype=dtype, mesh=mesh, vocab_pad_multiple=pad)
    return stored, params


def initial_params(
    config: ml_collections.ConfigDict, model: TransformerConfig, mesh
) -> state_lib.ModelParts:
    """Params from scratch, a liquid_jax checkpoint or training workdir, or a Hugging Face
    directory (vocabulary extended by ``model.num_image_codes``), placed on ``mesh``;
    the stored vocabulary padding may differ from ``model``'s."""
    if config.init.kind == "scratch":
        return state_lib.init_parts(model, mesh, config.train.seed)
    parts = state_lib.abstract_parts(model, mesh)
    stored, loaded = _load_init(config, model, mesh)
    diff = train_state.model_differences(stored.to_dict(), model.to_dict())
    if diff:
        raise train_state.IncompatibleCheckpointError(
            f"init.path {config.init.path} holds a different model than config.model:\n  " + "\n  ".join(diff)
        )
    nnx.replace_by_pure_dict(parts.params, loaded)
    return parts
