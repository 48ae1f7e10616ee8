"""``liquid-jax convert hf``: Hugging Face directory <-> liquid_jax checkpoint.

  liquid-jax convert hf --input=hf/gemma-7b --output=ckpt/gemma-7b-liquid
  liquid-jax convert hf --input=hf/gemma-7b --output=ckpt/gemma-7b --extend_image_codes=0
  liquid-jax convert hf --to=hf --input=ckpt/liquid-7b --output=hf/liquid-7b --dtype=bfloat16

With --to=hf, --input may also be a training workdir (its newest intact step, as
``liquid-jax export --to hf`` writes it). Special-token ids come from the input's own
tokenizer files; without them the family's released ids are assumed, with a warning.
"""

from __future__ import annotations

from absl import flags

from liquid_jax.api import load_vqgan
from liquid_jax.checkpoint.model import DTYPES
from liquid_jax.checkpoint.train_state import is_workdir
from liquid_jax.convert import hf
from liquid_jax.errors import UserError
from liquid_jax.convert.safetensors_io import DEFAULT_MAX_SHARD_BYTES
from liquid_jax.model.vqgan_config import DEFAULT_NUM_IMAGE_CODES
from liquid_jax.train import export

_INPUT = flags.DEFINE_string("input", None, "Source directory.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Destination directory (must not exist).", required=True)
_TO = flags.DEFINE_enum("to", "liquid", ["liquid", "hf"],
                        "liquid: Hugging Face -> liquid_jax checkpoint; hf: the reverse.")
_EXTEND = flags.DEFINE_integer(
    "extend_image_codes", DEFAULT_NUM_IMAGE_CODES,
    "Image-code tokens appended to a text model (0: keep text-only). A checkpoint that "
    "already has image codes is never extended.")
_VQGAN = flags.DEFINE_string(
    "vqgan", None, "The VQGAN the model learns (or learned) to draw with: a text model is extended by its "
    "codebook (instead of --extend_image_codes) and the checkpoint records it.")
_DTYPE = flags.DEFINE_enum("dtype", None, list(DTYPES),
                           "Parameter dtype of the output (default: float32 for --to=liquid, "
                           "the checkpoint's dtype for --to=hf).")
_PAD = flags.DEFINE_integer("vocab_pad_multiple", 1,
                            "Pad vocabulary tables to a multiple of this (e.g. 128 for TPU).")
_SHARD = flags.DEFINE_integer("max_shard_bytes", DEFAULT_MAX_SHARD_BYTES,
                              "Largest safetensors shard written with --to=hf.")


def main(argv: list[str]) -> None:
    del argv
    if _TO.value == "liquid":
        codec = None if _VQGAN.value is None else load_vqgan(_VQGAN.value)
        if codec is not None and flags.FLAGS["extend_image_codes"].present and codec.num_image_codes != _EXTEND.value:
            raise UserError(f"--extend_image_codes {_EXTEND.value} differs from the {codec.num_image_codes} codes "
                            f"of --vqgan {_VQGAN.value}; give one of them")
        config = hf.convert_hf_to_liquid(
            _INPUT.value, _OUTPUT.value, dtype=_DTYPE.value or "float32",
            extend_image_codes=_EXTEND.value, vocab_pad_multiple=_PAD.value, vqgan=codec,
        )
    elif is_workdir(_INPUT.value):
        _, config = export.export(_INPUT.value, _OUTPUT.value, to="hf", dtype=_DTYPE.value)
    else:
        config = hf.convert_liquid_to_hf(
            _INPUT.value, _OUTPUT.value, dtype=_DTYPE.value, max_shard_bytes=_SHARD.value
        )
    print(f"wrote {_OUTPUT.value}: {config.family}, vocab {config.vocab_size} "
          f"({config.num_image_codes} image codes), {config.num_layers} layers")
