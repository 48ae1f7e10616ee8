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
``boi_token_id``, ``eoi_token_id``, ``unconditional_token_id``; when absent they come
from the tokenizer by name (``default_special_tokens``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging
from flax import nnx
from tqdm.auto import tqdm

from liquid_jax import checkpoint
from liquid_jax.convert import safetensors_io
from liquid_jax.convert.hf_mapping import TensorMapping, config_from_hf, config_to_hf, hf_param_names, tensor_from_hf, tensor_to_hf
from liquid_jax.model.config import SpecialTokens, TransformerConfig
from liquid_jax.model.extend import DEFAULT_NUM_IMAGE_CODES, extended_table
from liquid_jax.model.transformer import abstract_model
from liquid_jax.sharding import state_shardings
from liquid_jax.tokenizer.text import TextTokenizer, find_tokenizer_file, load_text_tokenizer, tokenizer_files
from liquid_jax.tokenizer.vocab import default_special_tokens

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_SUBDIR = "tokenizer"  # where a liquid_jax checkpoint keeps its tokenizer files
RECIPE_TOKENS = ("boi", "eoi", "unconditional")
CHECKPOINT_KIND = "transformer"
DTYPES = ("float32", "bfloat16")
# Gemma's text vocabulary; 264192 = this + 8192 is the released Liquid_V1_7B.
GEMMA_TEXT_VOCAB = 256_000
# Tensors transformers may store that carry no weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class ConversionError(ValueError):
    """A Hugging Face checkpoint cannot be converted; the message names file and tensor."""


def read_hf_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory} is not a Hugging Face model directory: no {CONFIG_FILE}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e


def load_tokenizer_if_present(directory: str | os.PathLike) -> TextTokenizer | None:
    """The tokenizer of a model directory (or its ``tokenizer/`` subdirectory), or None."""
    for candidate in (os.fspath(directory), os.path.join(os.fspath(directory), TOKENIZER_SUBDIR)):
        if os.path.isdir(candidate) and find_tokenizer_file(candidate):
            return load_text_tokenizer(candidate)
    return None


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


def recipe_special_tokens(
    config: TransformerConfig, hf_config: Mapping[str, Any], tokenizer: TextTokenizer | None
) -> SpecialTokens:
    """bos/eos/pad from config.json; <boi>/<eoi>/<unconditional> from config.json when
    recorded there, else from the tokenizer by name, else the family's released ids."""
    recorded = {r: hf_config[f"{r}_token_id"] for r in RECIPE_TOKENS if f"{r}_token_id" in hf_config}
    if len(recorded) < len(RECIPE_TOKENS):
        family = default_special_tokens(config.family, tokenizer)
        recorded = {r: recorded.get(r, getattr(family, r)) for r in RECIPE_TOKENS}
    special = dataclasses.replace(config.special_tokens, **{r: int(i) for r, i in recorded.items()})
    outside = {r: i for r, i in dataclasses.asdict(special).items() if not 0 <= i < config.text_vocab_size}
    if outside:
        logging.warning(
            "special token ids %s lie outside the text vocabulary [0, %d); pass a tokenizer "
            "or record them in config.json before sampling", outside, config.text_vocab_size,
        )
    return special


def hf_to_config(
    hf_config: Mapping[str, Any],
    tokenizer: TextTokenizer | None = None,
    *,
    dtype: str = "float32",
    vocab_pad_multiple: int = 1,
) -> TransformerConfig:
    """Our config of a Hugging Face checkpoint as stored (before any extension)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    config = config_from_hf(
        dict(hf_config),
        num_image_codes=infer_num_image_codes(hf_config, tokenizer),
        vocab_pad_multiple=vocab_pad_multiple,
        dtype=dtype,
        param_dtype=dtype,
    )
    return config.replace(special_tokens=recipe_special_tokens(config, hf_config, tokenizer))


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


def _put_leaves(tree: dict[str, Any], put: Callable[[tuple[str, ...], Any], jax.Array],
                path: tuple[str, ...] = ()) -> None:
    """Replaces every leaf by ``put(path, leaf)`` in place, dropping each host array as
    soon as its replacement exists (so host memory never holds two copies)."""
    for key in list(tree):
        if isinstance(tree[key], dict):
            _put_leaves(tree[key], put, path + (key,))
        else:
            tree[key] = put(path + (key,), tree.pop(key))


def place_on_mesh(config: TransformerConfig, params: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Moves a nested dict of host arrays onto ``mesh`` with the shardings of their
    logical axes, one tensor at a time."""
    shardings = nnx.to_pure_dict(state_shardings(nnx.state(abstract_model(config)), mesh))

    def put(path: tuple[str, ...], value: Any) -> jax.Array:
        sharding = shardings
        for key in path:
            sharding = sharding[key]
        return jax.device_put(value, sharding)

    _put_leaves(params, put)
    return params


def _target_configs(
    directory: str, tokenizer: TextTokenizer | None, *, dtype: str, extend_image_codes: int,
    vocab_pad_multiple: int,
) -> tuple[TransformerConfig, TransformerConfig]:
    """(config as stored, config after vocabulary extension) of a Hugging Face directory."""
    hf_config = read_hf_config(directory)
    try:
        stored = hf_to_config(hf_config, tokenizer, dtype=dtype, vocab_pad_multiple=vocab_pad_multiple)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{os.path.join(directory, CONFIG_FILE)}: {e}") from e
    if extend_image_codes and not stored.num_image_codes:
        return stored, stored.replace(vocab_size=stored.vocab_size + extend_image_codes,
                                      num_image_codes=extend_image_codes)
    return stored, stored


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
    directory = os.fspath(directory)
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
        params = place_on_mesh(config, params, mesh)
    return config, params


def _tokenizer_assets(tokenizer_dir: str | None) -> dict[str, str]:
    if tokenizer_dir is None:
        return {}
    return {name: os.path.join(tokenizer_dir, name) for name in tokenizer_files(tokenizer_dir)}


def convert_hf_to_liquid(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
    extend_image_codes: int = DEFAULT_NUM_IMAGE_CODES,
    vocab_pad_multiple: int = 1,
    progress: bool = True,
) -> TransformerConfig:
    """Writes a liquid_jax checkpoint (Orbax params + card + tokenizer files), reading
    and writing one parameter at a time."""
    input_dir = os.fspath(input_dir)
    stored, config = _target_configs(
        input_dir, load_tokenizer_if_present(input_dir), dtype=dtype,
        extend_image_codes=extend_image_codes, vocab_pad_multiple=vocab_pad_multiple,
    )

    def parts() -> Iterator[dict[str, Any]]:
        for path, value in _read_hf_params(input_dir, stored, config, progress=progress):
            yield checkpoint.nested(path, value)
            del value  # released before the next parameter is read

    assets = {f"{TOKENIZER_SUBDIR}/{n}": p for n, p in _tokenizer_assets(input_dir).items()}
    metadata = {"kind": CHECKPOINT_KIND, "config": config.to_dict(), "source": "huggingface"}
    checkpoint.save_params_streaming(output_dir, parts(), metadata, extra_files=assets)
    return config


def config_from_metadata(metadata: Mapping[str, Any], directory: str | os.PathLike) -> TransformerConfig:
    """The TransformerConfig recorded in a liquid_jax checkpoint card."""
    if metadata.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{directory} holds a {metadata.get('kind')!r} checkpoint, not a {CHECKPOINT_KIND!r}")
    return TransformerConfig.from_dict(metadata["config"])


def hf_config_dict(config: TransformerConfig, dtype: str) -> dict[str, Any]:
    """config.json of an export: transformers' fields plus the recipe's token ids."""
    hf = config_to_hf(config)
    hf.update({f"{r}_token_id": getattr(config.special_tokens, r) for r in RECIPE_TOKENS})
    hf.update(dtype=dtype, torch_dtype=dtype)
    return hf


def _write_hf_dir(
    config: TransformerConfig,
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
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
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

    with checkpoint.atomic_directory(output_dir, overwrite=overwrite) as tmp, tqdm(
        total=len(specs), desc="writing safetensors", unit="tensor", disable=not progress
    ) as bar:
        tmp = os.fspath(tmp)
        safetensors_io.write_sharded(tmp, specs, tensors(bar), max_shard_bytes)
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(hf_config_dict(config, dtype), f, indent=2, sort_keys=True)
        with open(os.path.join(tmp, GENERATION_CONFIG_FILE), "w") as f:
            json.dump(generation, f, indent=2, sort_keys=True)
        for name, source in _tokenizer_assets(tokenizer_dir).items():
            shutil.copyfile(source, os.path.join(tmp, name))


def export_hf(
    config: TransformerConfig,
    params: dict[str, Any],
    output_dir: str | os.PathLike,
    *,
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
        config, read_param, output_dir, dtype=dtype,
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
    metadata = checkpoint.read_metadata(input_dir)
    config = config_from_metadata(metadata, input_dir)
    tokenizer_dir = os.path.join(os.fspath(input_dir), TOKENIZER_SUBDIR)
    _write_hf_dir(
        config, functools.partial(checkpoint.load_param, input_dir), output_dir, dtype=dtype,
        tokenizer_dir=tokenizer_dir if os.path.isdir(tokenizer_dir) else None,
        max_shard_bytes=max_shard_bytes, overwrite=False, progress=progress,
    )
    return config
