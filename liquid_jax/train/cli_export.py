"""``liquid-jax export``: a training run's model as a liquid_jax checkpoint or a Hugging Face directory.

  liquid-jax export --workdir run --output liquid-model
  liquid-jax export --workdir run --step 2000 --output liquid-model-hf --to hf --dtype bfloat16

Takes checkpoint --step of the run (default: the newest one that reads back; a damaged
newer one is reported and passed by) and writes its card, tokenizer and parameters,
without the optimizer state. Both outputs load with ``liquid_jax.load`` and the
``sample`` commands; the Hugging Face one with ``transformers`` too.
"""

from __future__ import annotations

from absl import flags

from liquid_jax.checkpoint.model import DTYPES
from liquid_jax.train import export

_WORKDIR = flags.DEFINE_string("workdir", None, "Training run directory (liquid-jax train --workdir).",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write (must not exist unless --overwrite).",
                              required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the newest intact one).")
_TO = flags.DEFINE_enum("to", "liquid", list(export.FORMATS), "liquid: a liquid_jax checkpoint; hf: Hugging Face.")
_DTYPE = flags.DEFINE_enum("dtype", None, list(DTYPES), "Parameter dtype written (default: as trained).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")


def main(argv: list[str]) -> None:
    del argv
    step, config = export.export(_WORKDIR.value, _OUTPUT.value, step=_STEP.value, to=_TO.value,
                                 dtype=_DTYPE.value, overwrite=_OVERWRITE.value)
    print(f"wrote {_OUTPUT.value} ({_TO.value}): step {step} of {_WORKDIR.value}, {config.family}, "
          f"vocab {config.vocab_size} ({config.num_image_codes} image codes)")
