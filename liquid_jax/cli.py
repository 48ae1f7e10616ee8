"""The ``liquid-jax`` command: one entry point, one module per subcommand.

Each subcommand module defines its absl flags at import and a ``main(argv)``; only
the chosen module is imported, so flags of different subcommands never collide.

Errors are for people: a user error (bad path, missing file, wrong format, mismatch,
bad flag value) ends the command with exit code 2 and a line naming the thing and what
to do; anything else with exit code 1 and one line. ``--verbose`` (or
``LIQUID_JAX_VERBOSE=1``) adds the traceback and INFO logs. ``liquid-jax <command>
--help`` lists that command's flags.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any, NoReturn

from absl import app, flags, logging

from liquid_jax import host_memory
from liquid_jax.errors import UserError

# (subcommand words) -> (module, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {}
VERBOSE_ENV = "LIQUID_JAX_VERBOSE"
USER_ERROR_EXIT = 2
# Errors that come from what the user gave, not from a bug.
USER_ERRORS = (UserError, app.UsageError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError, ValueError, KeyError)


def register(words: tuple[str, ...], module: str, summary: str) -> None:
    COMMANDS[words] = (module, summary)


register(("convert", "hf"), "liquid_jax.convert.cli_hf", "Hugging Face <-> liquid_jax checkpoints")
register(("sample", "t2i"), "liquid_jax.sample.cli_t2i", "text-to-image with guidance -> PNGs and a grid")
register(("sample", "understand"), "liquid_jax.sample.cli_understand", "answer questions about images, or caption them")
register(("sample", "text"), "liquid_jax.sample.cli_text", "continue text prompts")
register(("train",), "liquid_jax.train.cli_train", "train a Liquid model (resumes from --workdir)")
register(("export",), "liquid_jax.train.cli_export", "a training run's model -> liquid_jax or Hugging Face")
register(("plan",), "liquid_jax.train.cli_plan", "compile the train step for a TPU/GPU topology; memory fit")
register(("convert", "vqgan"), "liquid_jax.convert.cli_vqgan", "Chameleon / taming / HF VQGAN -> liquid_jax")
register(("train-vqgan",), "liquid_jax.train.cli_train_vqgan", "train a VQGAN image tokenizer")
register(("pretokenize", "text"), "liquid_jax.data.cli_pretokenize_text", "JSONL / TXT / Parquet -> ArrayRecord text shards")
register(("demo",), "liquid_jax.demo.cli_demo", "a mini-Liquid on the synthetic shapes world, end to end")
register(("pretokenize", "images"), "liquid_jax.data.cli_pretokenize_images", "images + captions -> ArrayRecord VQGAN-code shards")
register(("eval", "generate"), "liquid_jax.eval.cli_generate", "images for a benchmark's prompts, in its scorer's layout")
register(("eval", "fid"), "liquid_jax.eval.cli_fid", "FID (clean-fid, clean mode) of generated images; per category")
register(("eval", "text"), "liquid_jax.eval.cli_text", "text benchmarks through lm-evaluation-harness")
register(("eval", "vqa"), "liquid_jax.eval.cli_vqa", "LLaVA-format VQA questions -> LLaVA-format answer file")


def _usage() -> str:
    lines = ["usage: liquid-jax <command> [flags] [--verbose]", "", "commands:"]
    for words, (_, summary) in sorted(COMMANDS.items()):
        lines.append(f"  {' '.join(words):<22} {summary}")
    lines.append("")
    lines.append("`liquid-jax <command> --help` lists a command's flags.")
    return "\n".join(lines)


def _flag_values(module: Any) -> flags.FlagValues:
    return getattr(module, "FLAGS", None) if isinstance(getattr(module, "FLAGS", None), flags.FlagValues) \
        else flags.FLAGS


def command_help(prog: str, module: Any) -> str:
    """The module's docstring and every flag defined by liquid_jax's modules."""
    lines = [f"usage: {prog} [flags]", "", (module.__doc__ or "").strip(), "", "flags:"]
    by_module = _flag_values(module).flags_by_module_dict()
    seen = set()
    for name in sorted(by_module):
        if not name.startswith("liquid_jax") and name != module.__name__:
            continue
        for flag in sorted(by_module[name], key=lambda f: f.name):
            if flag.name in seen:
                continue
            seen.add(flag.name)
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            lines.append(f"  --{flag.name}: {flag.help}{default}")
    if "config" in _flag_values(module) and _flag_values(module)["config"].flag_type() == "config object":
        lines.append("  --config.<key>=<value>: override any key of the config file")
    lines.append("  --verbose: on errors, print the traceback; log at INFO")
    return "\n".join(lines)


def _fail(prog: str, message: str, code: int, verbose: bool) -> NoReturn:
    if verbose:
        traceback.print_exc()
    hint = " (--verbose shows the traceback)" if code == 1 and not verbose else ""
    print(f"{prog}: error: {message}{hint}", file=sys.stderr)
    sys.exit(code)


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    text = str(error).strip()
    return text or type(error).__name__


def _parser(prog: str, module: Any, verbose: bool):
    """Flag parsing that ends a bad flag with exit code 2 and one line."""
    parse = getattr(module, "parse_flags", None)

    def parse_flags(argv: list[str]) -> list[str]:
        try:
            rest = parse(argv) if parse is not None else _flag_values(module)(argv)
        except (flags.Error, UserError, FileNotFoundError) as e:
            text = _message(e)
            if "must have a value other than None" in text:
                text = f"{text.split('=')[0].removeprefix('flag ')} is required (see --help)"
            _fail(prog, text, USER_ERROR_EXIT, verbose=False)
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        return rest

    return parse_flags


def _run(prog: str, module: Any, verbose: bool):
    def main(argv: list[str]) -> None:
        explicit = "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
        if not explicit:  # Orbax logs every file it reads or writes at INFO
            logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
        try:
            if len(argv) > 1:
                raise app.UsageError(f"unexpected arguments {argv[1:]}; every input is given by a flag")
            module.main(argv)
        except KeyboardInterrupt:
            _fail(prog, "interrupted", 130, verbose)
        except USER_ERRORS as e:
            _fail(prog, _message(e), USER_ERROR_EXIT, verbose)
        except Exception as e:  # a bug: say what, keep the traceback for --verbose
            _fail(prog, f"{type(e).__name__}: {_message(e)}", 1, verbose)

    return main


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # run as the program, not called from Python: allocator first
        host_memory.reexec_with_hugepages()
    argv = list(sys.argv if argv is None else argv)
    verbose = "--verbose" in argv[1:] or os.environ.get(VERBOSE_ENV, "0") not in ("", "0")
    args = [a for a in argv[1:] if a != "--verbose"]
    for n in (2, 1):
        words = tuple(args[:n])
        if words in COMMANDS:
            prog = f"liquid-jax {' '.join(words)}"
            module = importlib.import_module(COMMANDS[words][0])
            rest = args[n:]
            if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in rest):
                print(command_help(prog, module))
                sys.exit(0)
            app.run(_run(prog, module, verbose), argv=[prog] + rest, flags_parser=_parser(prog, module, verbose))
            return
    print(_usage(), file=sys.stderr)
    sys.exit(0 if args[:1] in (["-h"], ["--help"]) else USER_ERROR_EXIT)


if __name__ == "__main__":
    main()
