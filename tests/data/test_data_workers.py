"""Grain worker processes: a JSON state taken mid-run restores exactly the batches that followed."""

import json

import numpy as np

from test_data_pipeline import config, iterator
from helpers.data_support import image_records, text_records, train_tokenizer, write_image_shards, write_text_shards


def test_worker_processes_resume_exactly(tmp_path):
    tok = train_tokenizer(str(tmp_path))
    rng = np.random.default_rng(3)
    write_text_shards(str(tmp_path / "txt"), text_records(rng, 100, (2, 50), "t"), 2)
    write_image_shards(str(tmp_path / "img"), image_records(rng, 50, (4, 4), 8192, "i"), 2)
    c = config(
        [{"path": str(tmp_path / "txt"), "kind": "text"}, {"path": str(tmp_path / "img"), "kind": "image"}],
        seq_len=128, batch_size=2, packing_bins=4, worker_count=2,
    )
    with iterator(c, tok) as it:
        for _ in range(5):
            it.next_numpy()
        state = json.loads(json.dumps(it.get_state()))
        rest = [it.next_numpy() for _ in range(3)]
    with iterator(c, tok) as resumed:
        resumed.set_state(state)
        for want in rest:
            got = resumed.next_numpy()
            for k in want:
                np.testing.assert_array_equal(got[k], want[k])
