"""A LiquidLM as an lm-evaluation-harness model, registered under the name ``liquid_jax``.

  lm = LiquidJaxLM(liquid_jax.load("liquid-7b/"), batch_size=16)
  lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])
  lm_eval.simple_evaluate(model="liquid_jax", model_args="checkpoint=liquid-7b/,dtype=bfloat16",
                          tasks=["arc_easy"])

Requests are scored as lm-eval's "hf" backend scores them on the exported checkpoint:
the same tokens (BOS prepended where the base model's tokenizer prepends it: Gemma and
Llama 3, not Qwen2.5; a text that starts with the BOS text keeps only that one), the
same truncation from the left to ``max_length`` tokens, log-softmax over the whole
vocabulary (image codes included) and "greedy" meaning every continuation token is the
argmax. Rows are right-padded (causal attention keeps padding out of the real
positions) into batches of a fixed number of rows whose widths are rounded up to a few
buckets, so a task compiles a handful of programs. With ``lm.mesh`` the rows are split
over its batch axes.

``loglikelihood_rolling`` predicts each token of the text once, after one BOS (lm-eval's
windows of ``max_length``). The "hf" backend encodes the text with the tokenizer's BOS
and then prefixes another one, so for Gemma and Llama it also scores BOS after BOS
(lm-eval issue #3333); perplexities here leave that term out.

``generate_until`` decodes with ``lm.generate_text`` (greedy unless the task samples)
until EOS or ``max_gen_toks`` and cuts the text at the first stop string.

Several processes (``jax.process_count() > 1``): ``rank`` and ``world_size`` are JAX's,
so lm-eval hands each process its share of the documents; each one needs the model on
its own devices (``liquid-jax eval text`` loads it so) and the results are gathered
through JAX's multi-host utilities.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pickle
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models import utils as model_utils
from tqdm.auto import tqdm

from liquid_jax.sharding import logical_to_spec, make_mesh, pad_to_batch_shards

if TYPE_CHECKING:
    from liquid_jax.api import LiquidLM

MODEL_NAME = "liquid_jax"
# Families whose Hugging Face tokenizer prepends BOS, and with it lm-eval's hf backend.
BOS_FAMILIES = ("gemma", "gemma2", "llama")
MIN_WIDTH = 16
SAMPLING_KWARGS = ("temperature", "top_k", "top_p")
_GENERATION_KWARGS = ("until", "max_gen_toks", "do_sample") + SAMPLING_KWARGS


def bucket_width(length: int, cap: int) -> int:
    """The batch width for rows of up to ``length`` tokens: 16, 24, 32, 48, 64, 96, ...
    (powers of two and halfway steps), at most ``cap``."""
    width = MIN_WIDTH
    while width < length:
        width = width * 3 // 2 if width & (width - 1) == 0 else width * 4 // 3
    return min(width, cap)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _score(graphdef: nnx.GraphDef, vocab_size: int, state: nnx.State, tokens: jax.Array,
           targets: jax.Array, scored: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row: the summed log-probability of ``targets`` where ``scored``, and whether
    each of those targets is the argmax."""
    model = nnx.merge(graphdef, state)
    hidden, _ = model.hidden_states(tokens)
    logits = model.project(hidden, 0, vocab_size)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    logprob = picked - jax.nn.logsumexp(logits, axis=-1)
    greedy = jnp.argmax(logits, axis=-1) == targets
    return jnp.sum(jnp.where(scored, logprob, 0.0), axis=-1), jnp.all(greedy | ~scored, axis=-1)


def _local_mesh() -> jax.sharding.Mesh | None:
    devices = jax.local_devices()
    return make_mesh(devices=devices) if len(devices) > 1 else None


def _positive_int(value: Any, name: str) -> int:
    """``value`` (an int, or digits as lm-eval's argument strings give them) if >= 1."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@register_model(MODEL_NAME)
class LiquidJaxLM(TemplateLM):
    """lm-eval's model interface over a ``LiquidLM``.

    Give ``lm`` (a loaded LiquidLM) or ``checkpoint`` (then loaded with ``dtype`` /
    ``step``, data-parallel over this process's devices; with ``lm`` it only names the
    model in lm-eval's results). ``batch_size``: rows per forward pass and
    prompts per generation. ``max_length``: longest scored window (default: the model's
    context). ``max_gen_toks``: new tokens when a task does not say. ``add_bos_token``:
    override the family's BOS rule. ``seed``: sampling seed of sampled generation.
    ``device`` and ``max_batch_size`` are accepted because lm-eval passes them; JAX
    places the work itself and the batch size is fixed.
    """

    def __init__(
        self,
        lm: LiquidLM | None = None,
        *,
        checkpoint: str | None = None,
        dtype: str = "float32",
        step: int | None = None,
        batch_size: int | str = 8,
        max_length: int | str | None = None,
        max_gen_toks: int | str = 256,
        add_bos_token: bool | None = None,
        seed: int = 0,
        device: str | None = None,
        max_batch_size: int | None = None,
    ):
        super().__init__()
        del device, max_batch_size
        if lm is None and checkpoint is None:
            raise ValueError("give a loaded LiquidLM or checkpoint=PATH")
        if lm is None:
            import liquid_jax

            lm = liquid_jax.load(checkpoint, dtype=dtype, mesh=_local_mesh(), step=step)
        if lm.vocab is None:
            raise ValueError("the model was loaded without tokenizer files; lm-eval tasks are text")
        if jax.process_count() > 1 and lm.mesh is not None and any(
            d.process_index != jax.process_index() for d in lm.mesh.devices.flat
        ):
            raise ValueError("with several processes each one evaluates its own share of the documents: "
                             "load the model on this process's devices (a mesh over jax.local_devices())")
        self.liquid = lm
        self.checkpoint = checkpoint
        self.vocab = lm.vocab
        self._batch_size = _positive_int(batch_size, "batch_size")
        context = lm.config.max_position_embeddings
        self._max_length = context if max_length is None else _positive_int(max_length, "max_length")
        if self._max_length > context:
            raise ValueError(f"max_length {self._max_length} is longer than the model's context of {context}")
        self._max_gen_toks = _positive_int(max_gen_toks, "max_gen_toks")
        self.add_bos_token = lm.config.family in BOS_FAMILIES if add_bos_token is None else bool(add_bos_token)
        self.seed = int(seed)
        self._bos_text = self.vocab.text.id_to_piece(self.prefix_token_id)
        self._rank = jax.process_index()
        self._world_size = jax.process_count()
        self._batch_rows = pad_to_batch_shards(self._batch_size, lm.mesh)

    # --- what lm-eval asks of a model -------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.vocab.special.eos

    @property
    def prefix_token_id(self) -> int:
        return self.vocab.special.bos

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs: Any) -> list[int]:
        """Token ids of ``string``, BOS first by the family's rule (or as asked); a
        string that starts with the BOS text gets exactly that one BOS."""
        del kwargs
        has_bos = string.startswith(self._bos_text)
        if has_bos:
            string = string[len(self._bos_text):]
        add = has_bos or (self.add_bos_token if add_special_tokens is None else add_special_tokens)
        ids = ([self.prefix_token_id] if add else []) + self.vocab.text.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.vocab.decode(tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        del kwargs
        rows = [self._row(context, continuation) for _, context, continuation in requests]
        answers = self._score_rows(rows, "loglikelihood requests", disable_tqdm)
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-probability of each whole text, in lm-eval's disjoint windows of
        ``max_length`` tokens after one BOS."""
        rows, owners = [], []
        for index, request in enumerate(requests):
            (text,) = request.args
            windows = lm_eval_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text, add_special_tokens=False), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1,
            )
            for context, continuation in map(lm_eval_utils.make_disjoint_window, windows):
                rows.append(self._row(context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._score_rows(rows, "rolling windows", disable_tqdm)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Continuations of each context, cut at the first of the task's stop strings."""
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(request.args[1], sort_keys=True, default=str)
            groups.setdefault(key, []).append(index)
        eos_text = self.vocab.text.id_to_piece(self.eot_token_id)
        batch_number = 0
        quiet = disable_tqdm or self.rank > 0
        with tqdm(total=len(requests), desc="generate_until requests", disable=quiet) as bar:
            for indices in groups.values():
                kwargs = dict(model_utils.normalize_gen_kwargs(requests[indices[0]].args[1], self.max_gen_toks))
                until = model_utils.handle_stop_sequences(kwargs.get("until"), eos=eos_text)
                new_tokens = kwargs["max_gen_toks"]
                sampling = self._sampling(kwargs)
                budget = self.max_length - new_tokens
                if budget < 1:
                    raise ValueError(f"max_gen_toks {new_tokens} leaves no room for a prompt in max_length "
                                     f"{self.max_length}")
                prompts = {i: self.tok_encode(requests[i].args[0])[-budget:] for i in indices}
                order = sorted(indices, key=lambda i: -len(prompts[i]))
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start:start + self.batch_size]
                    batch = [prompts[i] for i in chunk]
                    batch += [batch[-1]] * (self.batch_size - len(batch))  # one program per group
                    out = self.liquid.generate_text(batch, new_tokens, stop_tokens=(self.eot_token_id,),
                                                    seed=self.seed + batch_number, **sampling)
                    batch_number += 1
                    for i, text in zip(chunk, out.texts):
                        results[i] = model_utils.postprocess_generated_text(text, until, None)
                        self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
                    bar.update(len(chunk))
        return results

    # --- several processes ------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    def all_gather(self, tensor: Any) -> Any:
        """Every process's ``tensor`` (a torch tensor, as lm-eval passes it), stacked
        (0-d) or concatenated along the first axis."""
        if self.world_size == 1:
            return tensor
        import torch
        from jax.experimental import multihost_utils

        array = tensor.detach().cpu().numpy()
        return torch.as_tensor(np.asarray(multihost_utils.process_allgather(array, tiled=array.ndim > 0)))

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """Every process's ``obj`` on process ``dst`` (None elsewhere)."""
        if self.world_size == 1:
            return [obj]
        from jax.experimental import multihost_utils

        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size]))).reshape(-1)
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[:data.size] = data
        every = np.asarray(multihost_utils.process_allgather(padded))
        if self.rank != dst:
            return None
        return [pickle.loads(every[p, :sizes[p]].tobytes()) for p in range(self.world_size)]

    def barrier(self) -> None:
        if self.world_size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("liquid_jax lm-eval")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        params = nnx.state(self.liquid.model, nnx.Param)
        return {
            "model_family": self.liquid.config.family,
            "model_num_parameters": int(sum(np.size(x) for x in jax.tree.leaves(params))),
            "model_dtype": self.liquid.config.dtype,
            "checkpoint": self.checkpoint,
            "add_bos_token": self.add_bos_token,
            "max_length": self.max_length,
        }

    # --- scoring ----------------------------------------------------------------------

    def _row(self, context: list[int], continuation: list[int]) -> tuple[list[int], int]:
        """(tokens, how many of the last ones are scored), cut from the left to
        ``max_length + 1`` tokens as the hf backend cuts them."""
        if len(continuation) > self.max_length:
            raise ValueError(f"a continuation of {len(continuation)} tokens is longer than max_length "
                             f"{self.max_length}")
        return (context + continuation)[-(self.max_length + 1):], len(continuation)

    def _place(self, array: np.ndarray) -> jax.Array:
        mesh = self.liquid.mesh
        if mesh is None:
            return jnp.asarray(array)
        return jax.device_put(array, NamedSharding(mesh, logical_to_spec(("batch", None), mesh=mesh)))

    def _score_rows(self, rows: list[tuple[list[int], int]], desc: str,
                    disable_tqdm: bool) -> list[tuple[float, bool]]:
        """(log-probability, greedy) per row, longest rows first in batches of
        ``batch_size`` padded to a fixed row count."""
        graphdef, state = nnx.split(self.liquid.model)
        pad = self.vocab.special.pad
        answers: list[tuple[float, bool] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        mesh = self.liquid.mesh
        with tqdm(total=len(rows), desc=desc, disable=disable_tqdm or self.rank > 0) as bar:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = bucket_width(max(len(rows[i][0]) - 1 for i in chunk), self.max_length)
                tokens = np.full((self._batch_rows, width), pad, np.int32)
                targets = np.zeros((self._batch_rows, width), np.int32)
                scored = np.zeros((self._batch_rows, width), bool)
                for r, i in enumerate(chunk):
                    row, count = rows[i]
                    n = len(row) - 1
                    tokens[r, :n], targets[r, :n] = row[:-1], row[1:]
                    scored[r, n - count:n] = True
                with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
                    totals, greedy = _score(graphdef, self.liquid.config.vocab_size, state,
                                            *map(self._place, (tokens, targets, scored)))
                totals, greedy = jax.device_get((totals, greedy))
                for r, i in enumerate(chunk):
                    answers[i] = (float(totals[r]), bool(greedy[r]))
                bar.update(len(chunk))
        return answers

    def _sampling(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(kwargs) - set(_GENERATION_KWARGS))
        if unknown:
            raise ValueError(f"generation settings {unknown} are not supported by {MODEL_NAME}; "
                             f"it takes {list(_GENERATION_KWARGS)}")
        if not kwargs.get("do_sample"):
            return dict(temperature=0.0)
        return dict(temperature=float(kwargs.get("temperature", 1.0)), top_k=int(kwargs.get("top_k") or 0),
                    top_p=float(kwargs.get("top_p", 1.0)))
