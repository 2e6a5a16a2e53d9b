"""`keep_freed_memory`: a freed large block is reused without faulting its pages in again."""

import os
import subprocess
import sys

import pytest

CODE = """
import ctypes, resource, sys
from cnnjax.training.host_malloc import keep_freed_memory
print(keep_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 300 << 20
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[-1])
import jax
print(jax.config.values["jax_cpu_enable_async_dispatch"])
"""


def _run(env_value):
    env = {**os.environ, "CNNJAX_MALLOC": env_value}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True)
    applied, faults, async_dispatch = out.stdout.split()
    assert async_dispatch == str(not applied == "True")  # computations run on the dispatching thread when applied
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_block_is_reused_without_page_faults():
    kept, kept_faults = _run("")
    default, default_faults = _run("default")
    assert kept and not default  # CNNJAX_MALLOC=default leaves glibc alone
    pages = (300 << 20) // 4096
    assert default_faults > pages // 2  # glibc: a fresh mapping each time, every page faulted in again
    assert kept_faults < pages // 20  # kept: the same pages
