"""SIGTERM handling of both trainers (liquid_jax.train.preemption) in one process."""

import gc
import os
import signal

import pytest

from liquid_jax.errors import Interrupted
from liquid_jax.train.preemption import Preemption


def test_sigterm_before_the_first_step_stops_even_where_python_ignores_the_exception():
    with Preemption() as preemption:

        class SignalledDuringCollection:
            def __del__(self):  # Python prints and ignores exceptions raised here
                os.kill(os.getpid(), signal.SIGTERM)

        SignalledDuringCollection()
        gc.collect()
        with pytest.raises(Interrupted, match="before the first step"):
            preemption.arm()


def test_sigterm_after_the_first_step_asks_to_save_and_stop():
    with Preemption() as preemption:
        preemption.arm()
        assert not preemption.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert preemption.should_stop(2)
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle
