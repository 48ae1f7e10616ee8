"""Taming / Chameleon / Hugging Face VQGAN weights -> liquid_jax VQGAN.

Three sources share one key layout (taming's state dict):
- Chameleon's ``vqgan.ckpt`` (torch pickle with ``state_dict``, read with
  ``weights_only=True``) plus its ``vqgan.yaml`` (``model.params``: ``ddconfig``,
  ``n_embed``, ``embed_dim``; taming's ``n_embed`` is our ``num_image_codes``);
- a ``.safetensors`` file with the same keys (architecture from a yaml as above);
- a Hugging Face ``ChameleonVQVAE`` directory (``config.json`` + safetensors; encoder and
  quantizer only), or a full Chameleon model directory (``model.vqmodel.*`` keys).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import yaml
from flax import nnx

from liquid_jax.model.vqgan import VQGAN
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES, VQGANConfig

# Keys in taming checkpoints that belong to training only (LPIPS + discriminator).
_TRAINING_ONLY_PREFIXES = ("loss.",)
_HF_PREFIXES = ("model.vqmodel.", "vqmodel.")


class ConversionError(ValueError):
    """A checkpoint that does not match the expected layout; names the file and key."""


def config_from_taming_yaml(path: str) -> VQGANConfig:
    """Architecture from a taming/Chameleon ``vqgan.yaml`` (``model.params``)."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    try:
        params = doc["model"]["params"]
        dd = params["ddconfig"]
        n_embed, embed_dim = params["n_embed"], params["embed_dim"]
    except (KeyError, TypeError) as e:
        raise ConversionError(f"{path}: expected model.params.{{ddconfig,n_embed,embed_dim}} ({e!r} missing)") from e
    if dd.get("double_z", False):
        raise ConversionError(f"{path}: ddconfig.double_z is true; a VQGAN needs double_z: false")
    if float(dd.get("dropout", 0.0)) != 0.0:
        raise ConversionError(f"{path}: ddconfig.dropout={dd['dropout']}; only dropout 0 is supported")
    return VQGANConfig(
        ch=int(dd["ch"]),
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=int(dd["num_res_blocks"]),
        attn_resolutions=tuple(dd.get("attn_resolutions") or ()),
        z_channels=int(dd["z_channels"]),
        embed_dim=int(embed_dim),
        num_image_codes=int(n_embed),
        resolution=int(dd["resolution"]),
        in_channels=int(dd.get("in_channels", 3)),
        out_ch=int(dd.get("out_ch", 3)),
    )


def config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> VQGANConfig:
    """Architecture from a Hugging Face ChameleonVQVAEConfig (or ChameleonConfig.vq_config)."""
    c = dict(config.get("vq_config") or config)
    if c.get("double_latent", False):
        raise ConversionError(f"{source}: double_latent is true; a VQGAN needs false")
    if c.get("attn_type", "vanilla") != "vanilla":
        raise ConversionError(f"{source}: attn_type {c['attn_type']!r} is not supported (only 'vanilla')")
    return VQGANConfig(
        ch=int(c.get("base_channels", 128)),
        ch_mult=tuple(c.get("channel_multiplier", (1, 1, 2, 2, 4))),
        num_res_blocks=int(c.get("num_res_blocks", 2)),
        attn_resolutions=tuple(c.get("attn_resolutions") or ()),
        z_channels=int(c.get("latent_channels", 256)),
        embed_dim=int(c.get("embed_dim", 256)),
        num_image_codes=int(c.get("num_embeddings", DEFAULT_NUM_IMAGE_CODES)),
        resolution=int(c.get("resolution", 512)),
        in_channels=int(c.get("in_channels", 3)),
    )


def _taming_name(path: tuple) -> str:
    """nnx state path -> taming state-dict key (without the transposition)."""
    *parents, leaf = (str(p) for p in path)
    if leaf == "embedding":
        return ".".join(parents + ["embedding", "weight"])
    return ".".join(parents + ["weight" if leaf in ("kernel", "scale") else leaf])


def _to_ours(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":  # OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    return value


def _from_ours(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel":  # HWIO -> OIHW
        return np.transpose(value, (3, 2, 0, 1))
    return value


def load_state_dict(cfg: VQGANConfig, state_dict: Mapping[str, np.ndarray], source: str,
                    with_decoder: bool = True) -> VQGAN:
    """Builds a VQGAN from taming-layout tensors; errors name ``source`` and the key."""
    model = nnx.eval_shape(lambda: VQGAN(cfg, rngs=nnx.Rngs(0), with_decoder=with_decoder))
    graphdef, abstract = nnx.split(model)
    flat = nnx.to_flat_state(abstract)
    used: set[str] = set()
    values = []
    for path, var in flat:
        key = _taming_name(path)
        if key not in state_dict:
            raise ConversionError(f"{source}: missing tensor {key!r} (for {'.'.join(map(str, path))})")
        value = _to_ours(np.asarray(state_dict[key]), str(path[-1]))
        if value.shape != var.value.shape:
            raise ConversionError(
                f"{source}: tensor {key!r} has shape {np.shape(state_dict[key])}, expected "
                f"{_from_ours(np.zeros(var.value.shape), str(path[-1])).shape} for this config"
            )
        used.add(key)
        values.append((path, var.replace(jax.numpy.asarray(value, dtype=var.value.dtype))))
    ignorable = _TRAINING_ONLY_PREFIXES + (() if with_decoder else ("decoder.", "post_quant_conv."))
    unexpected = sorted(k for k in state_dict if k not in used and not k.startswith(ignorable))
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        raise ConversionError(f"{source}: {len(unexpected)} unexpected tensors for this config: {shown}")
    state = nnx.from_flat_state(values)
    return nnx.merge(graphdef, state)


def to_state_dict(model: VQGAN) -> dict[str, np.ndarray]:
    """liquid_jax VQGAN -> taming-layout numpy tensors (inverse of ``load_state_dict``)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        out[_taming_name(path)] = np.ascontiguousarray(_from_ours(np.asarray(var.value), str(path[-1])))
    return out


def read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Tensors of a taming ``.ckpt`` (``state_dict`` entry), loaded with weights_only=True."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ConversionError(f"{path}: cannot read as a weights-only torch checkpoint ({type(e).__name__}: {e})") from e
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise ConversionError(f"{path}: expected a dict with a 'state_dict' entry, got {type(obj).__name__}")
    return {k: v.detach().float().numpy() for k, v in sd.items() if isinstance(v, torch.Tensor)}


def read_safetensors(paths: Iterable[str], strip_prefixes: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Tensors of one or more safetensors files as float32 numpy (bf16 upcast)."""
    from safetensors import safe_open

    out = {}
    for path in paths:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                name = key
                for prefix in strip_prefixes:
                    if name.startswith(prefix):
                        name = name[len(prefix):]
                        break
                else:
                    if strip_prefixes and not key.startswith(("encoder.", "decoder.", "quant", "post_quant")):
                        continue
                out[name] = f.get_tensor(key).float().numpy()
    return out


def load_taming(ckpt_path: str, yaml_path: str | None = None) -> VQGAN:
    """A taming/Chameleon checkpoint (``.ckpt`` or ``.safetensors``) plus ``vqgan.yaml``."""
    yaml_path = yaml_path or _sibling_yaml(ckpt_path)
    cfg = config_from_taming_yaml(yaml_path)
    if ckpt_path.endswith(".safetensors"):
        sd = read_safetensors([ckpt_path])
    else:
        sd = read_torch_checkpoint(ckpt_path)
    with_decoder = any(k.startswith("decoder.") for k in sd)
    return load_state_dict(cfg, sd, ckpt_path, with_decoder=with_decoder)


def load_hf(directory: str) -> VQGAN:
    """A Hugging Face ChameleonVQVAE (or Chameleon model) directory; encoder + quantizer."""
    config_path = os.path.join(directory, "config.json")
    with open(config_path) as f:
        hf_config = json.load(f)
    cfg = config_from_hf(hf_config, config_path)
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise ConversionError(f"{directory}: no .safetensors files")
    prefixes = _HF_PREFIXES if hf_config.get("vq_config") else ()
    sd = read_safetensors(files, prefixes)
    return load_state_dict(cfg, sd, directory, with_decoder=False)


def load_converted(path: str, yaml_path: str | None = None) -> VQGAN:
    """A VQGAN from a taming/Chameleon file (plus yaml), a directory holding ``vqgan.ckpt``,
    or a Hugging Face directory; ``path`` is local."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "vqgan.ckpt")):
            return load_taming(os.path.join(path, "vqgan.ckpt"), yaml_path)
        if os.path.exists(os.path.join(path, "config.json")):
            return load_hf(path)
        raise FileNotFoundError(
            f"{path}: not a liquid_jax VQGAN checkpoint, a directory with vqgan.ckpt, "
            "or a Hugging Face ChameleonVQVAE directory"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"VQGAN {path}: no such file or directory")
    return load_taming(path, yaml_path)


def _sibling_yaml(ckpt_path: str) -> str:
    stem = os.path.splitext(ckpt_path)[0]
    for candidate in (stem + ".yaml", os.path.join(os.path.dirname(ckpt_path), "vqgan.yaml")):
        if os.path.exists(candidate):
            return candidate
    raise ConversionError(f"{ckpt_path}: no architecture yaml given and none found next to it (vqgan.yaml)")
