"""``liquid-jax eval text``: lm-evaluation-harness over a LiquidLM against lm-eval's own "hf"
backend on the Hugging Face export of the same checkpoint.

The stand-in for a downloaded Gemma is laid out as Google's: a SentencePiece model trained
with Gemma's settings (BPE, byte fallback, no dummy prefix), tokenizer_config.json with
add_bos_token and the tokenizer.json transformers writes from it. It is extended with
image codes, exported with ``liquid_jax.convert.hf`` and read by transformers.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from helpers import REPO
from helpers.hf_dirs import CORPUS, tiny_hf_model
from liquid_jax.convert.hf import convert_hf_to_liquid, convert_liquid_to_hf

TEXT_VOCAB, CODES = 400, 64
MAX_LENGTH = 48  # short, so that long documents are truncated and rolling texts windowed
MC, ROLLING, GEN = "liquid_mc", "liquid_rolling", "liquid_gen"

QUESTIONS = [
    ("A red circle sits to the", [" left", " right", " top"], 0),
    ("Liquid is a language model that", [" reads", " draws", " sings", " swims"], 1),
    ("Two yellow stars and one purple", [" hexagon", " square"], 0),
    ("The caption of this image is:", [" a small green triangle", " water", " a blue square"], 2),
    ("Generate an image based on this", [" description.", " model."], 0),
    (" ".join(CORPUS[:6]) + " The last shape is a", [" circle", " triangle", " star"], 1),  # > MAX_LENGTH
    ("Question: what floats above the water?\nAnswer:", [" stars", " a hexagon"], 1),
]
PROMPTS = ["A red circle sits", "The caption of this image is:", " ".join(CORPUS[:4]), "Liquid"]


def gemma_like_tokenizer(directory) -> None:
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(CORPUS), model_prefix=str(directory / "tokenizer"), vocab_size=TEXT_VOCAB,
        model_type="bpe", byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        split_digits=True, normalization_rule_name="identity",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=["<mask>", "<2mass>", "[@BOS@]", "<unused0>", "<unused1>",
                                                 "<unused2>"], minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink()
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
    }))
    transformers.AutoTokenizer.from_pretrained(directory).save_pretrained(directory)


def write_task(directory, name: str, rows: list[dict], **fields) -> None:
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {
        "task": name, "dataset_path": "json", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(directory / "cache")},
        **fields,
    }
    (directory / f"{name}.yaml").write_text(json.dumps(config))  # JSON is YAML


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_text")
    source = root / "gemma"
    tiny_hf_model("gemma", TEXT_VOCAB, d_model=32).save_pretrained(source)
    gemma_like_tokenizer(source)
    checkpoint, export = str(root / "liquid"), str(root / "liquid-hf")
    convert_hf_to_liquid(str(source), checkpoint, extend_image_codes=CODES, progress=False)
    convert_liquid_to_hf(checkpoint, export, dtype="float32", progress=False)

    tasks = root / "tasks"
    tasks.mkdir()
    write_task(tasks, MC, [{"question": q, "choices": c, "answer": a} for q, c, a in QUESTIONS],
               output_type="multiple_choice", doc_to_text="{{question}}", doc_to_choice="{{choices}}",
               doc_to_target="{{answer}}", target_delimiter="",
               metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}])
    write_task(tasks, GEN, [{"question": p, "answer": "x"} for p in PROMPTS],
               output_type="generate_until", doc_to_text="{{question}}", doc_to_target="{{answer}}",
               generation_kwargs={"until": ["e"], "max_gen_toks": 10, "do_sample": False},
               metric_list=[{"metric": "exact_match"}])

    import liquid_jax
    from liquid_jax.eval.lm_eval_adapter import LiquidJaxLM
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    ours = LiquidJaxLM(liquid_jax.load(checkpoint, dtype="float32"), batch_size=4, max_length=MAX_LENGTH)
    hf = HFLM(pretrained=export, dtype="float32", device="cpu", batch_size=4, max_length=MAX_LENGTH)
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    return dict(root=root, checkpoint=checkpoint, export=export, tasks=str(tasks), ours=ours, hf=hf,
                manager=manager)


def evaluate(setup, lm, task):
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=setup["manager"], log_samples=True,
                                   bootstrap_iters=0)


def test_tokens_are_the_hf_backends(setup):
    ours, hf = setup["ours"], setup["hf"]
    for text in ["A red circle", "<bos>A red circle", " yes", "Zürich 12 ✓\nAnswer:", ""]:
        assert ours.tok_encode(text) == hf.tok_encode(text), text
        assert ours.tok_encode(text, add_special_tokens=False) == hf.tok_encode(text, add_special_tokens=False)
    assert ours.tok_encode("A red circle")[0] == 2  # Gemma's BOS, as its tokenizer adds it
    assert (ours.prefix_token_id, ours.eot_token_id, ours.max_length) == (
        hf.prefix_token_id, hf.eot_token_id, hf.max_length)


def test_multiple_choice_loglikelihoods_and_accuracy_equal_the_hf_backends(setup):
    ours, reference = evaluate(setup, setup["ours"], MC), evaluate(setup, setup["hf"], MC)
    a, b = ours["samples"][MC], reference["samples"][MC]
    assert [s["doc_id"] for s in a] == [s["doc_id"] for s in b] and len(a) == len(QUESTIONS)
    answers = [r[0] for s in a for r in s["resps"]]  # (loglikelihood, is_greedy) per choice
    answers_hf = [r[0] for s in b for r in s["resps"]]
    np.testing.assert_allclose([x[0] for x in answers], [x[0] for x in answers_hf], atol=1e-4, rtol=0)
    assert [x[1] for x in answers] == [x[1] for x in answers_hf]
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"][MC][metric] == reference["results"][MC][metric], metric
    assert len(setup["ours"].tok_encode(QUESTIONS[5][0])) > MAX_LENGTH  # truncated from the left


def test_generate_until_equals_transformers_greedy_decoding(setup):
    samples = evaluate(setup, setup["ours"], GEN)["samples"][GEN]
    model, tokenizer = setup["hf"].model, setup["hf"].tokenizer
    # Texts from SentencePiece's decoder: transformers' renders invalid UTF-8 byte runs
    # (frequent in a random model's output) with one replacement character per byte.
    sp = spm.SentencePieceProcessor(model_file=os.path.join(setup["export"], "tokenizer.model"))
    cut = 0
    for sample in samples:
        ids = tokenizer.encode(PROMPTS[sample["doc_id"]])[-(MAX_LENGTH - 10):]  # room for 10 new tokens
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, eos_token_id=1,
                                 pad_token_id=0)
        new = out[0, len(ids):].tolist()
        text = sp.decode(new[:new.index(1)] if 1 in new else new)
        assert sample["resps"][0][0] == text.split("e")[0], (sample["doc_id"], text)
        cut += "e" in text
    assert cut >= 2  # the stop string did cut some


def test_loglikelihood_rolling_equals_a_transformers_computation(setup):
    from lm_eval.api.instance import Instance

    ours = setup["ours"]
    texts = [" ".join(CORPUS[:5]), "A red circle.", "Zürich ünïcode ✓ " * 9]
    requests = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    got = ours.loglikelihood_rolling(requests, disable_tqdm=True)

    model, tokenizer = setup["hf"].model, setup["hf"].tokenizer
    for text, value in zip(texts, got):
        # One BOS, then every token once, each window of up to MAX_LENGTH predictions read
        # from the MAX_LENGTH tokens before its end.
        sequence = [tokenizer.bos_token_id] + tokenizer.encode(text, add_special_tokens=False)
        total, n = 0.0, len(sequence) - 1
        for start in range(0, n, MAX_LENGTH):
            end = min(start + MAX_LENGTH, n)
            window = sequence[max(0, end - MAX_LENGTH):end + 1]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([window[:-1]])).logits[0].double(), -1)
            targets = torch.tensor(window[1:])
            total += logp[torch.arange(len(targets)), targets][-(end - start):].sum().item()
        assert abs(value - total) < 1e-3, (text, value, total)
    assert len(sequence) > 2 * MAX_LENGTH  # the last text spans three windows


def test_sharded_batches_score_like_one_device_and_the_hf_backend(setup):
    import jax

    import liquid_jax
    from liquid_jax.eval.lm_eval_adapter import LiquidJaxLM
    from liquid_jax.sharding import make_mesh

    ours, hf = setup["ours"], setup["hf"]
    requests = []
    for question, choices, _ in QUESTIONS[:4]:
        context = ours.tok_encode(question)
        with torch.no_grad():  # transformers' own greedy continuation: is_greedy must be True
            greedy = hf.model.generate(torch.tensor([context]), max_new_tokens=3, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)[0, len(context):].tolist()
        requests += [(None, context, greedy), (None, context, ours.tok_encode(choices[0], add_special_tokens=False))]
    mesh = make_mesh((2, 1, 2), devices=jax.devices()[:4])
    sharded = LiquidJaxLM(liquid_jax.load(setup["checkpoint"], dtype="float32", mesh=mesh), batch_size=3,
                          max_length=MAX_LENGTH)
    got = sharded._loglikelihood_tokens(requests, disable_tqdm=True)
    for other in (ours._loglikelihood_tokens(requests, disable_tqdm=True),
                  hf._loglikelihood_tokens(requests, disable_tqdm=True)):
        np.testing.assert_allclose([g[0] for g in got], [o[0] for o in other], atol=1e-4, rtol=0)
        assert [g[1] for g in got] == [o[1] for o in other]
    assert [g[1] for g in got] == [True, False] * 4


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env.pop("LIQUID_JAX_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "liquid_jax.cli", "eval", "text", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_results_json_and_refuses_unknown_tasks(setup, tmp_path):
    out = tmp_path / "results" / "text.json"
    done = cli(f"--checkpoint={setup['checkpoint']}", f"--tasks={MC}", f"--include_path={setup['tasks']}",
               "--dtype=float32", "--batch_size=4", f"--out={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    from lm_eval.models.huggingface import HFLM

    # The command scores with the model's whole context, and so does this reference.
    reference = evaluate(setup, HFLM(pretrained=setup["export"], dtype="float32", device="cpu", batch_size=4), MC)
    for metric in ("acc,none", "acc_norm,none"):
        assert results["results"][MC][metric] == reference["results"][MC][metric], metric
    assert results["config"]["model_family"] == "gemma" and results["config"]["checkpoint"] == setup["checkpoint"]
    assert "acc_norm" in done.stdout and MC in done.stdout

    done = cli(f"--checkpoint={setup['checkpoint']}", "--tasks=no_such_task", f"--include_path={setup['tasks']}")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()
    assert len(line) == 1 and "no_such_task" in line[0] and "--include_path" in line[0], done.stderr[-2000:]


@pytest.mark.slow  # two processes, each importing lm-eval and compiling
def test_two_processes_split_the_documents_and_score_like_one(setup, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = tmp_path / "text.json"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "liquid_jax.cli", "eval", "text", f"--checkpoint={setup['checkpoint']}",
         f"--tasks={MC},{GEN}", f"--include_path={setup['tasks']}", "--dtype=float32", "--batch_size=2",
         f"--out={out}", "--distributed=on", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) for i in range(2)]
    printed = []
    for p in procs:
        stdout, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        printed.append(stdout)
    assert MC in printed[0] and MC not in printed[1]  # process 1 scored its share; process 0 reports
    results = json.loads(out.read_text())["results"]
    from lm_eval.models.huggingface import HFLM

    reference = evaluate(setup, HFLM(pretrained=setup["export"], dtype="float32", device="cpu", batch_size=4), MC)
    for metric in ("acc,none", "acc_norm,none"):
        assert results[MC][metric] == reference["results"][MC][metric], metric
    assert GEN in results
