"""``liquid-jax eval generate``: images for a benchmark's prompts, in the layout its
official scorer reads.

  liquid-jax eval generate --benchmark=mjhq30k --prompts=MJHQ-30K/meta_data.json \\
      --checkpoint=liquid-7b/ --vqgan=vqgan/ --out=mjhq_images/
  liquid-jax eval generate --benchmark=geneval --prompts=geneval/prompts/evaluation_metadata.jsonl \\
      --checkpoint=liquid-7b/ --vqgan=vqgan/ --out=geneval_images/ --speculative_window=16

Benchmarks: mjhq30k (meta_data.json), geneval (evaluation_metadata.jsonl), genai-bench
(genai_image.json), dpg (the prompts/ folder of .txt files), parti (PartiPrompts.tsv),
prompts (a .txt with a prompt per line, or .jsonl with "prompt" and optional "id").
On several hosts run the same command on each: prompts are split between them and each
batches its share over its own devices. Re-running the same command resumes: finished
images are kept, missing ones drawn.
"""

from __future__ import annotations

from absl import flags

from liquid_jax.eval import benchmarks
from liquid_jax.sample import cli_sample
from liquid_jax.train import distributed

cli_sample.define_flags(temperature=0.99, top_k=4096, top_p=0.96)
cli_sample.define_image_flags()
_BENCHMARK = flags.DEFINE_enum("benchmark", None, sorted(benchmarks.BENCHMARKS), "Which benchmark's prompt "
                               "file and output layout.", required=True)
_PROMPTS = flags.DEFINE_string("prompts", None, "The benchmark's prompt file (or folder, for dpg), as "
                               "distributed.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder (new, or an earlier run of this command to resume).",
                           required=True)
_NUM_IMAGES = flags.DEFINE_integer("num_images", None, "Images per prompt (default: what the benchmark's "
                                   "scorer expects; fixed for mjhq30k, genai-bench and dpg).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts drawn together (times num_images, times 2 rows "
                                   "with guidance).", lower_bound=1)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N prompts (a quick look before the full run).",
                              lower_bound=1)
distributed.define_flags()


def main(argv: list[str]) -> None:
    del argv
    from liquid_jax.eval import generate
    benchmark = benchmarks.get(_BENCHMARK.value)
    prompts = benchmark.read(_PROMPTS.value)
    if _LIMIT.value is not None:
        prompts = prompts[: _LIMIT.value]
    num_images = benchmark.check_num_images(_NUM_IMAGES.value)
    distributed.initialize_from_flags()
    codec = cli_sample.load_codec(required=True)
    sampling = cli_sample.image_settings(codec)
    seed = sampling.pop("seed")
    lm = cli_sample.load_model(local=True)
    summary = generate.generate(
        lm, codec, benchmark, prompts, _OUT.value, num_images=num_images, batch_size=_BATCH_SIZE.value,
        seed=seed, settings=dict(checkpoint=flags.FLAGS.checkpoint, vqgan=flags.FLAGS.vqgan,
                                 dtype=flags.FLAGS.dtype), **sampling,
    )
    print(f"{benchmark.name}: {summary['prompts']} prompts here ({summary['skipped']} already done), "
          f"{summary['drawn'] * num_images} images drawn in {summary['seconds']:.0f} s -> {_OUT.value}")
