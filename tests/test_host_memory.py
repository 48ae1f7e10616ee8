"""The GLIBC_TUNABLES edit behind huge-page malloc, and its re-exec in a real process."""

import os
import subprocess
import sys

from liquid_jax import host_memory


def test_tunable_is_appended_once():
    assert host_memory.tunables_with_hugepages("") == "glibc.malloc.hugetlb=1"
    assert (
        host_memory.tunables_with_hugepages("glibc.malloc.arena_max=2")
        == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    )
    assert host_memory.tunables_with_hugepages("glibc.malloc.hugetlb=0") is None
    assert host_memory.tunables_with_hugepages("a=1:glibc.malloc.hugetlb=2") is None


def _child_tunables(extra_env: dict[str, str]) -> str:
    code = (
        "import os\n"
        "from liquid_jax import host_memory\n"
        "host_memory.reexec_with_hugepages()\n"
        "print(os.environ.get('GLIBC_TUNABLES', ''))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", host_memory.OPT_OUT)}
    env.update(extra_env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_reexec_sets_the_tunable_unless_opted_out():
    if sys.platform.startswith("linux"):
        assert _child_tunables({}) == "glibc.malloc.hugetlb=1"
    assert _child_tunables({host_memory.OPT_OUT: "0"}) == ""
