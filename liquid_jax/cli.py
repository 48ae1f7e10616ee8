"""The ``liquid-jax`` command: one entry point, one module per subcommand.

Each subcommand module defines its absl flags at import and a ``main(argv)``; only
the chosen module is imported, so flags of different subcommands never collide.
"""

from __future__ import annotations

import importlib
import sys

from absl import app

# (subcommand words) -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {}


def register(words: tuple[str, ...], module: str, summary: str) -> None:
    COMMANDS[words] = (module, summary)


register(("convert", "hf"), "liquid_jax.convert.cli_hf", "Hugging Face <-> liquid_jax checkpoints")


def _usage() -> str:
    lines = ["usage: liquid-jax <command> [flags]", "", "commands:"]
    for words, (_, summary) in sorted(COMMANDS.items()):
        lines.append(f"  {' '.join(words):<22} {summary}")
    lines.append("")
    lines.append("`liquid-jax <command> --help` lists a command's flags.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    args = argv[1:]
    for n in (2, 1):
        words = tuple(args[:n])
        if words in COMMANDS:
            module = importlib.import_module(COMMANDS[words][0])
            app.run(module.main, argv=[f"liquid-jax {' '.join(words)}"] + args[n:])
            return
    print(_usage(), file=sys.stderr)
    sys.exit(0 if args[:1] in (["-h"], ["--help"]) else 2)


if __name__ == "__main__":
    main()
