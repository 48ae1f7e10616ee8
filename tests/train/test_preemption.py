"""SIGTERM handling of both trainers (liquid_jax.train.preemption) in one process."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO
from liquid_jax.train.preemption import EARLY_MESSAGE, Preemption

# Where a SIGTERM before the first step can land: inside a gc callback (Python prints and
# ignores exceptions there) and inside jax comparing pytree metadata (which wraps them).
_EARLY_SIGTERM = {
    "gc": """
        class SignalledDuringCollection:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
        SignalledDuringCollection()
        gc.collect()
    """,
    "pytree": """
        @jax.tree_util.register_static
        class Meta:
            def __eq__(self, other):
                os.kill(os.getpid(), signal.SIGTERM)
                return True
            def __hash__(self):
                return 0
        jax.tree_util.tree_structure((Meta(), 1)) == jax.tree_util.tree_structure((Meta(), 1))
    """,
}


@pytest.mark.parametrize("where", sorted(_EARLY_SIGTERM))
def test_sigterm_before_the_first_step_ends_the_process_wherever_it_lands(where):
    program = "import gc, os, signal, jax\nfrom liquid_jax.train.preemption import Preemption\n"
    program += "with Preemption() as preemption:\n" + textwrap.indent(
        textwrap.dedent(_EARLY_SIGTERM[where]) + "print('survived')\n", "    ")
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "survived" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == EARLY_MESSAGE


def test_sigterm_after_the_first_step_asks_to_save_and_stop():
    with Preemption() as preemption:
        preemption.arm()
        assert not preemption.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle
