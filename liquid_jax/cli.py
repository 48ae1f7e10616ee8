"""The ``liquid-jax`` command: one entry point, one module per subcommand.

Each subcommand module defines its absl flags at import and a ``main(argv)``; only
the chosen module is imported, so flags of different subcommands never collide.
"""

from __future__ import annotations

import importlib
import sys

from absl import app, flags

from liquid_jax import host_memory

# (subcommand words) -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {}


def register(words: tuple[str, ...], module: str, summary: str) -> None:
    COMMANDS[words] = (module, summary)


register(("convert", "hf"), "liquid_jax.convert.cli_hf", "Hugging Face <-> liquid_jax checkpoints")
register(("sample", "t2i"), "liquid_jax.sample.cli_t2i", "text-to-image with guidance -> PNGs and a grid")
register(("sample", "understand"), "liquid_jax.sample.cli_understand", "answer questions about images, or caption them")
register(("sample", "text"), "liquid_jax.sample.cli_text", "continue text prompts")
register(("train",), "liquid_jax.train.cli_train", "train a Liquid model (resumes from --workdir)")
register(("plan",), "liquid_jax.train.cli_plan", "compile the train step for a TPU/GPU topology; memory fit")
register(("convert", "vqgan"), "liquid_jax.convert.cli_vqgan", "Chameleon / taming / HF VQGAN -> liquid_jax")
register(("train-vqgan",), "liquid_jax.train.cli_train_vqgan", "train a VQGAN image tokenizer")
register(("pretokenize", "text"), "liquid_jax.data.cli_pretokenize_text", "JSONL / TXT / Parquet -> ArrayRecord text shards")
register(("demo",), "liquid_jax.demo.cli_demo", "a mini-Liquid on the synthetic shapes world, end to end")
register(("pretokenize", "images"), "liquid_jax.data.cli_pretokenize_images", "images + captions -> ArrayRecord VQGAN-code shards")


def _usage() -> str:
    lines = ["usage: liquid-jax <command> [flags]", "", "commands:"]
    for words, (_, summary) in sorted(COMMANDS.items()):
        lines.append(f"  {' '.join(words):<22} {summary}")
    lines.append("")
    lines.append("`liquid-jax <command> --help` lists a command's flags.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # run as the program, not called from Python: allocator first
        host_memory.reexec_with_hugepages()
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    for n in (2, 1):
        words = tuple(args[:n])
        if words in COMMANDS:
            module = importlib.import_module(COMMANDS[words][0])
            flags.adopt_module_key_flags(module)  # so --help lists the subcommand's flags
            parser = getattr(module, "parse_flags", app.parse_flags_with_usage)
            app.run(module.main, argv=[f"liquid-jax {' '.join(words)}"] + args[n:], flags_parser=parser)
            return
    print(_usage(), file=sys.stderr)
    sys.exit(0 if args[:1] in (["-h"], ["--help"]) else 2)


if __name__ == "__main__":
    main()
