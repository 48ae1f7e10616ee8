"""``liquid-jax eval text``: text benchmarks through lm-evaluation-harness.

  liquid-jax eval text --checkpoint=liquid-7b/ --tasks=hellaswag,arc_easy,piqa --out=results/text.json
  liquid-jax eval text --checkpoint=liquid-7b/ --tasks=my_task --include_path=my_tasks/ --limit=20
  liquid-jax eval text --checkpoint=liquid-7b/ --tasks=gsm8k --num_fewshot=5 --batch_size=32 --mesh=1,1,4

--tasks takes lm-eval's task, group and tag names (`lm_eval --tasks list`; globs such as
mmlu_* too) and those of the task YAMLs under --include_path; lm-eval fetches their
datasets from the Hugging Face Hub. Prints lm-eval's table and, with --out, writes its
results JSON. Scores are those of lm-eval's "hf" backend on the exported checkpoint.
--temperature / --top_k / --top_p, when given, replace the generation tasks' own settings;
--seed seeds sampled generation. On several hosts run the same command on each: lm-eval
splits the documents between them and each batches its share over its own devices.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import flags

from liquid_jax import paths
from liquid_jax.errors import UserError
from liquid_jax.sample import cli_sample
from liquid_jax.train import distributed

cli_sample.define_flags(temperature=0.0, top_k=0, top_p=1.0)
_TASKS = flags.DEFINE_list("tasks", None, "lm-eval task names, comma-separated.", required=True)
_INCLUDE_PATH = flags.DEFINE_string("include_path", None, "Folder of your own lm-eval task YAMLs.")
_NUM_FEWSHOT = flags.DEFINE_integer("num_fewshot", None, "Examples in each prompt (default: each task's own).",
                                    lower_bound=0)
_LIMIT = flags.DEFINE_integer("limit", None, "Only the first N documents of each task (a quick look).",
                              lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Requests per forward pass (per host).", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Write lm-eval's results JSON here.")
distributed.define_flags()


def _task_manager() -> Any:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("liquid-jax eval text needs lm-evaluation-harness: pip install -e \".[eval]\" "
                        "(or pip install \"lm-eval>=0.4.13\")") from None
    include = _INCLUDE_PATH.value
    if include is not None:
        include = paths.local(include, "--include_path")
        if not os.path.isdir(include):
            raise FileNotFoundError(f"--include_path {_INCLUDE_PATH.value} is not a folder of task YAMLs")
    return TaskManager(include_path=include)


def resolve_tasks(task_manager: Any, names: list[str]) -> list[str]:
    """lm-eval's names for ``names`` (globs expanded); an unknown one is a UserError."""
    resolved: list[str] = []
    for name in names:
        found = task_manager.match_tasks([name])
        if not found:
            where = f"nor under --include_path {_INCLUDE_PATH.value}" if _INCLUDE_PATH.value else \
                "(a task YAML of your own needs --include_path DIR)"
            raise UserError(f"--tasks: unknown task {name!r}: not one of lm-eval's tasks {where}; "
                            "`lm_eval --tasks list` lists lm-eval's")
        resolved += [t for t in found if t not in resolved]
    return resolved


def _generation_overrides() -> dict[str, Any] | None:
    given = {name: flags.FLAGS[name].value for name in ("temperature", "top_k", "top_p")
             if flags.FLAGS[name].present}
    if not given:
        return None
    return dict(given, do_sample=given.get("temperature", 1.0) > 0)


def main(argv: list[str]) -> None:
    del argv
    task_manager = _task_manager()
    tasks = resolve_tasks(task_manager, _TASKS.value)
    distributed.initialize_from_flags()
    import lm_eval
    from lm_eval.utils import handle_non_serializable, make_table

    from liquid_jax.eval.lm_eval_adapter import LiquidJaxLM

    lm = LiquidJaxLM(cli_sample.load_model(local=True), checkpoint=flags.FLAGS.checkpoint,
                     batch_size=_BATCH_SIZE.value, seed=flags.FLAGS.seed)
    results = lm_eval.simple_evaluate(
        model=lm, model_args=f"checkpoint={flags.FLAGS.checkpoint},dtype={flags.FLAGS.dtype}", tasks=tasks,
        num_fewshot=_NUM_FEWSHOT.value, limit=_LIMIT.value, batch_size=_BATCH_SIZE.value,
        gen_kwargs=_generation_overrides(), task_manager=task_manager, log_samples=False,
    )
    if results is None:  # not process 0
        return
    if _OUT.value:
        paths.write_atomic(_OUT.value, json.dumps(results, indent=2, default=handle_non_serializable,
                                             ensure_ascii=False))
    print(make_table(results))
    if "groups" in results:
        print(make_table(results, "groups"))
