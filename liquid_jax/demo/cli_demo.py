"""``liquid-jax demo``: a mini-Liquid on the synthetic shapes world, end to end.

  liquid-jax demo --workdir=DIR                                  # everything; prints its expected time first
  liquid-jax demo --workdir=DIR --config=configs/demo.py:smoke   # seconds-long check
  liquid-jax demo --workdir=DIR --stage=evaluate                 # redo one stage
  liquid-jax demo --workdir=DIR --config.sample.guidance_scale=3 --rerun_changed  # redo what it changes
  liquid-jax demo --workdir=DIR --experiment=scaling             # see liquid_jax.demo.experiments

Finished stages are skipped, unless an earlier stage ran again after them (--stage): then
they are redone. A finished stage that ran with another config is refused before any work
(or re-run, with --rerun_changed). DIR/report.html and DIR/report.json hold the results.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags
from ml_collections import config_flags

from liquid_jax import former_names
from liquid_jax.demo import experiments, report_stage, training
from liquid_jax.demo.pipeline import STAGE_NAMES, run_demo
from liquid_jax.demo.stages import Context
from liquid_jax.errors import UserError
from liquid_jax.train import config as train_config

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "configs", "demo.py")

# The demo's flags live in their own FlagValues so that parse_flags can check --config.*
# overrides itself and name the nearest valid keys. The config flag has no default: a default
# file is read (with the command line's overrides) as the flag is defined, before any check.
FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file("config", None, f"demo config file (default {DEFAULT_CONFIG}; "
                                          "configs/demo.py:smoke is the seconds-long preset)", flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for every stage's outputs and the report",
                               flag_values=FLAGS)
_STAGE = flags.DEFINE_enum("stage", None, list(STAGE_NAMES),
                           "re-run only this stage (earlier ones must be done, with this config)", flag_values=FLAGS)
_RERUN_CHANGED = flags.DEFINE_bool("rerun_changed", False, "re-run the finished stages whose config differs from "
                                   "this one (instead of refusing them)", flag_values=FLAGS)
_EXPERIMENT = flags.DEFINE_enum("experiment", None, list(experiments.EXPERIMENTS),
                                "run an experiment after the demo's data, tokenizer and VQGAN stages",
                                flag_values=FLAGS)


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the demo's flags (``liquid-jax`` calls this); an unknown --config.* key exits
    naming the nearest valid keys, an invalid setting of a training run naming its key.
    Keys of earlier versions (``former_names.DEMO_CONFIG``) still work."""
    argv = former_names.current_overrides(argv, former_names.DEMO_CONFIG)
    sys.argv[1:] = argv[1:]  # config_flags finds its --config.* override flags in sys.argv
    if not any(arg == "--config" or arg.startswith("--config=") for arg in argv):
        argv = [argv[0], f"--config={DEFAULT_CONFIG}", *argv[1:]]
    try:
        train_config.check_overrides(argv)
    except ValueError as e:
        raise UserError(str(e)) from e
    rest = FLAGS(argv)
    if FLAGS["workdir"].value is None:
        raise UserError("--workdir is required")
    if FLAGS["stage"].value is not None and FLAGS["rerun_changed"].value:
        raise UserError("--stage re-runs one stage whatever its config; leave out --rerun_changed")
    training.validate(_CONFIG.value)
    flags.FLAGS.mark_as_parsed()
    return rest


def main(argv: list[str]) -> None:
    del argv
    context = Context(_CONFIG.value, os.path.abspath(_WORKDIR.value))
    if _EXPERIMENT.value:
        table = experiments.run_experiment(_EXPERIMENT.value, context, rerun_changed=_RERUN_CHANGED.value)
        print(table)
        return
    records = run_demo(context, only=_STAGE.value, rerun_changed=_RERUN_CHANGED.value)
    if report_stage.STAGE not in records:
        print(f"The stages after {_STAGE.value} are now out of date and the report is not updated: "
              f"`liquid-jax demo --workdir {_WORKDIR.value}` (with this config) redoes them.")
    elif os.path.exists(os.path.join(context.workdir, "report.json")):
        with open(os.path.join(context.workdir, "report.json")) as f:
            print(json.dumps(json.load(f)["metrics"], indent=2))
