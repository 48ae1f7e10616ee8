"""Two jax processes on localhost: pre-tokenizing splits the work by process index, the
pipeline reads disjoint shards whose union is the whole data set, and batches are
global arrays over both processes' devices."""

import json
import os
import subprocess
import sys
import textwrap

import portpicker

from helpers.data_support import train_tokenizer

WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    port, pid, inputs, out_dir, sp_path, result = sys.argv[1:7]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    from jax.experimental import multihost_utils
    import sentencepiece as spm
    from liquid_jax.data import pipeline, shards
    from liquid_jax.data.pretokenize_text import pretokenize_text
    from liquid_jax.model.config import SpecialTokens
    from liquid_jax.sharding import make_mesh
    from liquid_jax.tokenizer.text import SentencePieceTokenizer

    written = pretokenize_text([inputs], out_dir, worker=shards.worker_slot())
    multihost_utils.sync_global_devices("pretokenized")
    tok = SentencePieceTokenizer(sp_path)
    sp = spm.SentencePieceProcessor(model_file=sp_path)
    c = pipeline.default_config()
    c.sources = [{"path": out_dir, "kind": "text"}]
    c.seq_len, c.batch_size, c.packing_bins, c.num_epochs = 64, 2, 4, 1
    ds, built = pipeline.build_dataset(c, tok, SpecialTokens(), 400)
    texts = []
    for batch in ds:
        for row_tokens, seg in zip(batch["tokens"], batch["segment_ids"]):
            for s in set(seg[seg > 0].tolist()):
                texts.append(sp.decode(row_tokens[seg == s][1:].tolist()))
    c.num_epochs, c.batch_size = 0, 4
    mesh = make_mesh((-1, 1, 1))
    it = pipeline.make_iterator(c, tok, SpecialTokens(), 400, mesh=mesh)
    batch = next(it)
    result_obj = {
        "written": written["shards_written"],
        "files": [f.rsplit("/", 1)[-1] for f in built.shares["source0"].files],
        "texts": texts,
        "global_shape": list(batch["tokens"].shape),
        "devices": len(jax.devices()),
        "local_rows": [s.data.shape[0] for s in batch["tokens"].addressable_shards],
    }
    json.dump(result_obj, open(result, "w"))
    jax.distributed.shutdown()
    """
)


def test_two_processes_disjoint_shards(tmp_path):
    sp = train_tokenizer(str(tmp_path))
    inputs = tmp_path / "in"
    inputs.mkdir()
    docs = []
    for f in range(4):
        with open(inputs / f"part{f}.jsonl", "w") as fh:
            for i in range(5):
                text = f"doc {f} {i} red cat."
                docs.append(text)
                fh.write(json.dumps({"text": text}) + "\n")
    port = portpicker.pick_unused_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), str(pid), str(inputs / "*.jsonl"), str(tmp_path / "out"),
             sp.path, str(tmp_path / f"result{pid}.json")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for pid in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    results = [json.loads((tmp_path / f"result{pid}.json").read_text()) for pid in range(2)]
    assert [r["written"] for r in results] == [2, 2]  # pre-tokenizing split by process index
    files = [set(r["files"]) for r in results]
    assert files[0].isdisjoint(files[1]) and len(files[0] | files[1]) == 4
    texts = [r["texts"] for r in results]
    assert not set(texts[0]) & set(texts[1])
    assert sorted(texts[0] + texts[1]) == sorted(docs)
    for r in results:
        assert r["devices"] == 4 and r["global_shape"] == [4, 64]
        assert r["local_rows"] == [1, 1]  # each process holds its half of the global batch
