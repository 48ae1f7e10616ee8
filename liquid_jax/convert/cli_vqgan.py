"""`liquid-jax convert vqgan`: Chameleon / taming / Hugging Face VQGAN -> liquid_jax checkpoint.

  liquid-jax convert vqgan --input=vqgan.ckpt [--yaml=vqgan.yaml] --output=ckpt/vqgan
  liquid-jax convert vqgan --input=weights.safetensors --yaml=vqgan.yaml --output=...
  liquid-jax convert vqgan --input=hf_chameleon_vqvae_dir --output=...   (encoder only)
"""

from __future__ import annotations

from absl import flags, logging

from liquid_jax.api import load_vqgan_model
from liquid_jax.checkpoint.vqgan import save_vqgan

_INPUT = flags.DEFINE_string("input", None, "vqgan.ckpt, .safetensors, or a Hugging Face directory", required=True)
_YAML = flags.DEFINE_string("yaml", None, "taming vqgan.yaml (default: next to --input)")
_OUTPUT = flags.DEFINE_string("output", None, "liquid_jax checkpoint directory to write", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "replace an existing --output")


def main(argv: list[str]) -> None:
    del argv
    model = load_vqgan_model(_INPUT.value, _YAML.value)
    save_vqgan(_OUTPUT.value, model, {"source": _INPUT.value}, overwrite=_OVERWRITE.value)
    cfg = model.config
    logging.info(
        "wrote %s: %d codes of dim %d, %d pixels per code, decoder %s",
        _OUTPUT.value, cfg.num_image_codes, cfg.embed_dim, cfg.pixels_per_code, model.has_decoder,
    )
    print(f"wrote {_OUTPUT.value}")
