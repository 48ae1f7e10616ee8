"""Hugging Face model directories <-> liquid_jax parameters and checkpoints.

Conversion streams. Reading goes parameter by parameter: the Hugging Face tensors of
one of our parameters (one per layer for a stacked layer parameter) are read one at
a time into a preallocated array, which is written to the Orbax checkpoint and
released before the next parameter is read. Export restores one parameter at a time
and writes its tensors straight into safetensors shards. Host memory stays well
under one copy of the model in the target dtype. Vocabulary extension by image codes
happens on the fly.

Liquid checkpoints are recognised and never extended twice: a ``num_image_codes``
entry in config.json (written by our exporter) is authoritative; without it a model
whose ``vocab_size`` is exactly its tokenizer's size + 8192 (the released
Liquid_V1_7B: 264192 = 256000 + 8192) counts as already extended, and so does a
Gemma with vocab_size 264192 when no tokenizer is present.

The recipe's token ids (<boi>, <eoi>, <unconditional>) are written to config.json as
``boi_token_id``, ``eoi_token_id``, ``unconditional_token_id``, and the model's image
format (``ImageFormat``: size prefix, pixels per code, trained grids, VQGAN) as
``image_*`` entries. When absent, token ids come from the checkpoint's tokenizer files
(``special_tokens_from_files``) and the image format is upstream's.

Hugging Face directories are local: copy one from a bucket before converting it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from liquid_jax import paths
from liquid_jax.checkpoint import directory as ckpt_dir
from liquid_jax.checkpoint import model as model_checkpoint
from liquid_jax.checkpoint.card import TOKENIZER_SUBDIR
from liquid_jax.convert import safetensors_io
from liquid_jax.convert.hf_mapping import TensorMapping, config_from_hf, config_to_hf, hf_param_names, tensor_from_hf, tensor_to_hf
from liquid_jax.errors import UserError
from liquid_jax.model.config import TransformerConfig
from liquid_jax.model.extend import extended_table
from liquid_jax.model.image_format import ImageFormat
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.tokenizer.text import TextTokenizer, find_tokenizer_file, load_text_tokenizer
from liquid_jax.tokenizer.vocab import ASSUMED, RECIPE_ROLES, special_tokens_from_files

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# Gemma's text vocabulary; 264192 = this + 8192 is the released Liquid_V1_7B.
GEMMA_TEXT_VOCAB = 256_000
# Tensors transformers may store that carry no weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class ConversionError(UserError):
    """A Hugging Face checkpoint cannot be converted; the message names file and tensor."""


def is_hf_dir(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` is a local Hugging Face model directory (has config.json)."""
    return not paths.is_url(directory) and os.path.isfile(os.path.join(os.fspath(directory), CONFIG_FILE))


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = os.path.join(paths.local(directory, "Hugging Face directory"), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} is not a Hugging Face model directory: no {CONFIG_FILE}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e


def tokenizer_location(directory: str | os.PathLike) -> str | None:
    """The folder holding a model directory's tokenizer: itself or its ``tokenizer/``."""
    for candidate in (os.fspath(directory), os.path.join(os.fspath(directory), TOKENIZER_SUBDIR)):
        if os.path.isdir(candidate) and find_tokenizer_file(candidate):
            return candidate
    return None


def load_tokenizer_if_present(directory: str | os.PathLike) -> TextTokenizer | None:
    """The tokenizer of a model directory (or its ``tokenizer/`` subdirectory), or None."""
    location = None if paths.is_url(directory) else tokenizer_location(directory)
    return None if location is None else load_text_tokenizer(location)


def infer_num_image_codes(hf_config: Mapping[str, Any], tokenizer: TextTokenizer | None) -> int:
    """How many image codes a Hugging Face checkpoint already has (see module docstring)."""
    if "num_image_codes" in hf_config:
        return int(hf_config["num_image_codes"])
    vocab = int(hf_config["vocab_size"])
    if tokenizer is not None:
        return DEFAULT_NUM_IMAGE_CODES if vocab == tokenizer.vocab_size + DEFAULT_NUM_IMAGE_CODES else 0
    if hf_config.get("model_type") in ("gemma", "gemma2") and vocab == GEMMA_TEXT_VOCAB + DEFAULT_NUM_IMAGE_CODES:
        return DEFAULT_NUM_IMAGE_CODES
    return 0


def hf_to_config(
    hf_config: Mapping[str, Any],
    tokenizer: TextTokenizer | None = None,
    *,
    dtype: str = "float32",
    vocab_pad_multiple: int = 1,
    tokenizer_dir: str | None = None,
) -> TransformerConfig:
    """Our config of a Hugging Face checkpoint as stored (before any extension); special
    tokens from the checkpoint's own files (``special_tokens_from_files``)."""
    model_checkpoint.check_dtype(dtype)
    config = config_from_hf(
        dict(hf_config),
        num_image_codes=infer_num_image_codes(hf_config, tokenizer),
        vocab_pad_multiple=vocab_pad_multiple,
        dtype=dtype,
        param_dtype=dtype,
    )
    special, sources = special_tokens_from_files(config.family, hf_config, tokenizer, tokenizer_dir)
    assumed = {role: getattr(special, role) for role, where in sources.items() if where == ASSUMED}
    if assumed:
        logging.warning("no tokenizer file or config entry names the token(s) %s: assumed %s, the ids of "
                        "the released %s tokenizer. Convert a directory with its tokenizer files to read "
                        "them from there.", ", ".join(assumed), assumed, config.family)
    outside = {r: i for r, i in dataclasses.asdict(special).items() if not 0 <= i < config.text_vocab_size}
    if outside:
        logging.warning(
            "special token ids %s lie outside the text vocabulary [0, %d); pass a tokenizer "
            "or record them in config.json before sampling", outside, config.text_vocab_size,
        )
    return config.replace(special_tokens=special)


def _table_names(config: TransformerConfig) -> set[str]:
    return {m.hf_name for m in hf_param_names(config) if m.kind == "table"}


def _by_param(config: TransformerConfig) -> dict[tuple[str, ...], list[TensorMapping]]:
    """The Hugging Face tensors of each of our parameters, parameters in order of first use."""
    groups: dict[tuple[str, ...], list[TensorMapping]] = {}
    for m in hf_param_names(config):
        groups.setdefault(m.path, []).append(m)
    return groups


def _param_from_hf(
    config: TransformerConfig, group: list[TensorMapping], get_tensor: Callable[[str], np.ndarray]
) -> np.ndarray:
    """One of our parameters from its Hugging Face tensors, read one at a time; a layer
    parameter is filled into a preallocated [num_layers, ...] array."""
    stacked = None
    for m in group:
        tensor = get_tensor(m.hf_name)
        if tensor.shape != m.hf_shape:
            raise ValueError(f"tensor {m.hf_name!r}: expected shape {m.hf_shape}, got {tensor.shape}")
        value = tensor_from_hf(config, m, tensor)
        if m.layer is None:
            return value
        if stacked is None:
            stacked = np.empty((config.num_layers, *value.shape), value.dtype)
        stacked[m.layer] = value
    return stacked


def _target_configs(
    directory: str, tokenizer: TextTokenizer | None, *, dtype: str, extend_image_codes: int,
    vocab_pad_multiple: int,
) -> tuple[TransformerConfig, TransformerConfig]:
    """(config as stored, config after vocabulary extension) of a Hugging Face directory."""
    hf_config = read_hf_config(directory)
    try:
        stored = hf_to_config(hf_config, tokenizer, dtype=dtype, vocab_pad_multiple=vocab_pad_multiple,
                              tokenizer_dir=tokenizer_location(directory))
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{os.path.join(directory, CONFIG_FILE)}: {e}") from e
    if extend_image_codes and not stored.num_image_codes:
        return stored, stored.replace(vocab_size=stored.vocab_size + extend_image_codes,
                                      num_image_codes=extend_image_codes)
    return stored, stored


def hf_image_format(directory: str | os.PathLike, tokenizer: TextTokenizer | None = None) -> ImageFormat:
    """The image format a Hugging Face directory records (upstream's when it has image
    codes and records none; the defaults for a text model)."""
    hf_config = read_hf_config(directory)
    if tokenizer is None:
        tokenizer = load_tokenizer_if_present(directory)
    try:
        return ImageFormat.from_hf(hf_config, infer_num_image_codes(hf_config, tokenizer))
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{os.path.join(os.fspath(directory), CONFIG_FILE)}: {e}") from e


def _read_hf_params(
    directory: str, stored: TransformerConfig, config: TransformerConfig, *, progress: bool
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Yields (path, array) for each of our parameters in ``config.param_dtype``, reading
    one Hugging Face tensor at a time; errors name the file and the tensor."""
    tables = _table_names(config)
    target_dtype = np.dtype(jax.numpy.dtype(config.param_dtype))
    mappings = hf_param_names(config)
    reader = safetensors_io.SafetensorsReader(directory)
    current = {"name": None}
    with tqdm(
        total=len(mappings), desc=f"reading {os.path.basename(directory.rstrip('/'))}",
        unit="tensor", disable=not progress,
    ) as bar:
        def get_tensor(name: str) -> np.ndarray:
            current["name"] = name
            tensor = reader.get_tensor(name)
            if name in tables and config.vocab_size != stored.vocab_size:
                if tensor.shape[0] != stored.vocab_size:
                    raise ValueError(f"tensor {name!r}: expected {stored.vocab_size} rows, got {tensor.shape}")
                new_rows = config.vocab_size - stored.vocab_size
                tensor = extended_table(tensor, stored.vocab_size, new_rows, config.vocab_size)
            bar.update(1)
            return tensor.astype(target_dtype, copy=False)

        for path, group in _by_param(config).items():
            try:
                value = _param_from_hf(config, group, get_tensor)
            except (KeyError, ValueError) as e:
                name = current["name"]
                where = os.path.join(directory, reader.file_of(name)) if name in reader.names() else directory
                message = e.args[0] if e.args else str(e)
                raise ConversionError(f"{where}: {message}") from e
            yield path, value
            del value  # released before the next parameter is read
    unused = sorted(set(reader.names()) - {m.hf_name for m in mappings})
    unused = [n for n in unused if not n.endswith(_IGNORED_SUFFIXES)]
    if unused:
        logging.warning("%s: ignoring %d tensors not used by %s: %s", directory, len(unused),
                        config.family, unused[:10])


def load_hf_params(
    directory: str | os.PathLike,
    *,
    dtype: str = "float32",
    extend_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    vocab_pad_multiple: int = 1,
    mesh: jax.sharding.Mesh | None = None,
    tokenizer: TextTokenizer | None = None,
    progress: bool = True,
) -> tuple[TransformerConfig, dict[str, Any]]:
    """(config, params) of a Hugging Face directory, streamed tensor by tensor.

    ``extend_image_codes``: number of image-code rows to append (0: keep the text
    vocabulary); ignored for a checkpoint that already has image codes. Params are
    host numpy arrays in ``dtype``, or jax arrays sharded on ``mesh``.
    """
    directory = paths.local(directory, "Hugging Face directory")
    if tokenizer is None:
        tokenizer = load_tokenizer_if_present(directory)
    stored, config = _target_configs(directory, tokenizer, dtype=dtype, extend_image_codes=extend_image_codes,
                                     vocab_pad_multiple=vocab_pad_multiple)
    params: dict[str, Any] = {}
    for path, value in _read_hf_params(directory, stored, config, progress=progress):
        parent = params
        for key in path[:-1]:
            parent = parent.setdefault(key, {})
        parent[path[-1]] = value
    if mesh is not None:
        params = model_checkpoint.place_on_mesh(config, params, mesh)
    return config, params


def convert_hf_to_liquid(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    extend_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    vocab_pad_multiple: int = 1,
    vqgan: Any = None,
    progress: bool = True,
) -> TransformerConfig:
    """Writes a liquid_jax checkpoint (Orbax params + card + tokenizer files), reading
    and writing one parameter at a time. With ``vqgan`` (an ImageCodec) a text model is
    extended by its codebook and the card records it (its codes are the ones to train
    on); a model with image codes must match it."""
    input_dir = paths.local(input_dir, "Hugging Face directory")
    tokenizer = load_tokenizer_if_present(input_dir)
    stored, config = _target_configs(
        input_dir, tokenizer, dtype=dtype,
        extend_image_codes=extend_image_codes if vqgan is None else vqgan.num_image_codes,
        vocab_pad_multiple=vocab_pad_multiple,
    )
    image = hf_image_format(input_dir, tokenizer)
    if vqgan is not None:
        image.check_vqgan(config.num_image_codes, vqgan)
        image = image.replace(pixels_per_code=vqgan.pixels_per_code, vqgan_fingerprint=vqgan.fingerprint)
    model_checkpoint.save_model(
        output_dir, config, image,
        model_checkpoint.nested_parts(_read_hf_params(input_dir, stored, config, progress=progress)),
        tokenizer=tokenizer_location(input_dir), source="huggingface", streaming=True,
    )
    return config


def hf_config_dict(config: TransformerConfig, dtype: str, image: ImageFormat | None = None) -> dict[str, Any]:
    """config.json of an export: transformers' fields plus the recipe's token ids and,
    for a model with image codes, its image format."""
    hf = config_to_hf(config)
    hf.update({f"{r}_token_id": getattr(config.special_tokens, r) for r in RECIPE_ROLES})
    if config.num_image_codes and image is not None:
        hf.update(image.to_hf())
    hf.update(dtype=dtype, torch_dtype=dtype)
    return hf


def _write_hf_dir(
    config: TransformerConfig,
    image: ImageFormat | None,
    read_param: Callable[[tuple[str, ...]], np.ndarray],
    output_dir: str | os.PathLike,
    *,
    dtype: str | None,
    tokenizer_dir: str | None,
    max_shard_bytes: int,
    overwrite: bool,
    progress: bool,
) -> None:
    """Writes a Hugging Face directory, taking our parameters one at a time from
    ``read_param(path)`` and streaming their tensors into safetensors shards."""
    dtype = dtype or config.param_dtype
    model_checkpoint.check_dtype(dtype)
    target = np.dtype(jax.numpy.dtype(dtype))
    groups = _by_param(config)
    specs = [safetensors_io.TensorSpec(m.hf_name, m.hf_shape, target) for g in groups.values() for m in g]
    tokens = config.special_tokens
    generation = {"bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "pad_token_id": tokens.pad}

    def tensors(bar: tqdm) -> Iterator[tuple[str, np.ndarray]]:
        for path, group in groups.items():
            value = np.asarray(read_param(path))
            for m in group:
                bar.update(1)
                yield m.hf_name, tensor_to_hf(config, m, value if m.layer is None else value[m.layer]).astype(
                    target, copy=False)
            del value  # released before the next parameter is read

    output_dir = paths.local(output_dir, "Hugging Face output directory")
    with ckpt_dir.atomic_directory(output_dir, overwrite=overwrite) as tmp, tqdm(
        total=len(specs), desc="writing safetensors", unit="tensor", disable=not progress
    ) as bar:
        tmp = os.fspath(tmp)
        safetensors_io.write_sharded(tmp, specs, tensors(bar), max_shard_bytes)
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(hf_config_dict(config, dtype, image), f, indent=2, sort_keys=True)
        with open(os.path.join(tmp, GENERATION_CONFIG_FILE), "w") as f:
            json.dump(generation, f, indent=2, sort_keys=True)
        for name, source in model_checkpoint.tokenizer_assets(tokenizer_dir).items():
            paths.resolve(source).copy(paths.resolve(tmp) / os.path.basename(name))  # tokenizer/<name> -> <name>


def export_hf(
    config: TransformerConfig,
    params: dict[str, Any],
    output_dir: str | os.PathLike,
    *,
    image: ImageFormat | None = None,
    dtype: str | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = safetensors_io.DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> None:
    """Writes a Hugging Face directory that ``transformers`` loads with from_pretrained.

    Padded vocabulary rows are dropped; ``dtype`` defaults to ``config.param_dtype``.
    Single-process: call it on one host with params it can read.
    """
    def read_param(path: tuple[str, ...]) -> Any:
        return functools.reduce(lambda tree, key: tree[key], path, params)

    _write_hf_dir(
        config, image, read_param, output_dir, dtype=dtype,
        tokenizer_dir=None if tokenizer_dir is None else os.fspath(tokenizer_dir),
        max_shard_bytes=max_shard_bytes, overwrite=overwrite, progress=progress,
    )


def convert_liquid_to_hf(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = safetensors_io.DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
) -> TransformerConfig:
    """A liquid_jax checkpoint -> a Hugging Face directory (tokenizer files included),
    restoring one parameter at a time."""
    config, image = model_checkpoint.read_model_card(input_dir)
    _write_hf_dir(
        config, image, functools.partial(ckpt_dir.load_param, input_dir), output_dir, dtype=dtype,
        tokenizer_dir=model_checkpoint.tokenizer_dir(input_dir),
        max_shard_bytes=max_shard_bytes, overwrite=False, progress=progress,
    )
    return config
