"""One process of the multi-host training test (run by test_train_multihost.py).

usage: multihost_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR TOKENIZER

The trainer keeps the tokenizer in the workdir even when it is handed the batches, so
the worker gets one (trained once by the test: all processes read the same file).
"""

import sys

import jax
import numpy as np

from helpers import train_support as support
from liquid_jax.model.config import load_config_file
from liquid_jax.sharding import make_mesh
from liquid_jax.train import trainer
from liquid_jax.train import train_step as step_lib

BATCH, LENGTH, VOCAB = 8, 64, 320


class FixedBatches:
    """Global batch ``i`` is the same random array whatever the process layout."""

    def __init__(self, mesh):
        self.sharding = step_lib.batch_sharding(mesh)
        self.index = 0

    def __next__(self):
        rng = np.random.default_rng(self.index)
        self.index += 1
        tokens = rng.integers(0, VOCAB, (BATCH, LENGTH + 1)).astype(np.int32)
        host = {
            "tokens": tokens[:, :-1],
            "targets": tokens[:, 1:],
            "loss_mask": (rng.random((BATCH, LENGTH)) < 0.9).astype(np.int32),
            "segment_ids": np.ones((BATCH, LENGTH), np.int32),
            "positions": np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH)),
        }
        return {
            k: jax.make_array_from_callback(v.shape, self.sharding, lambda idx, v=v: v[idx])
            for k, v in host.items()
        }

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = state["index"]


def main(process_id: int, num_processes: int, port: int, workdir: str, tokenizer: str) -> None:
    if num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id
        )
    config = load_config_file(support.TINY_CONFIG, "smoke")
    config.tokenizer = tokenizer
    config.data.batch_size, config.data.seq_len = BATCH, LENGTH
    config.train.steps = 5
    config.checkpoint.every = 5
    config.mesh.data, config.mesh.fsdp = 2, -1
    result = trainer.train(config, workdir, data=FixedBatches(make_mesh((2, -1, 1))))
    assert result.step == 5, result


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
