"""``liquid-jax sample text``: continue text prompts.

  liquid-jax sample text --checkpoint=ckpt/liquid-7b --prompt="The capital of France is"
  liquid-jax sample text --checkpoint=... --prompts_file=prompts.txt --temperature=0.8 --top_p=0.95
"""

from __future__ import annotations

from absl import flags

from liquid_jax.sample import cli_sample

cli_sample.define_flags(temperature=0.0, top_k=0, top_p=1.0)
cli_sample.define_prompt_flags()
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 256, "Longest continuation in tokens.")


def main(argv: list[str]) -> None:
    del argv
    prompts = cli_sample.read_prompts()
    lm = cli_sample.load_model()
    result = lm.generate_text(prompts, _MAX_NEW.value, progress=True, **cli_sample.sampling_flags())
    for prompt, text in zip(prompts, result.texts):
        print(f"{prompt}{text}\n")
