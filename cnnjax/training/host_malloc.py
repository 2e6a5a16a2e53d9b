"""Keep freed host memory in the process (glibc), so a CPU step does not fault its buffers in again.

XLA's CPU runtime allocates an execution's temporary buffers with `malloc`
and frees them when it ends; a train step's buffers hold every activation the
backward pass needs (hundreds of MB for a ResNet at batch 128). glibc hands out
blocks that large as fresh `mmap`ed pages and returns them to the kernel on
`free`, so every step touches every page for the first time again: ResNet-20
at batch 128 took 76,000 minor page faults and 118 ms of system CPU time a
step (241.7 ms wall on the project's 2-core CPU).

`keep_freed_memory` raises glibc's mmap threshold to 1 GiB and its trim
threshold to 2 GiB, so such blocks come from the heap and stay there once
freed, and runs CPU computations on the thread that dispatches them
(`jax_cpu_enable_async_dispatch` off): JAX otherwise runs them on a worker
thread, whose malloc arena cannot grow past 64 MiB heaps and maps every
larger block afresh. Together: 0.2 faults and 6 ms of system time a step,
193.7 ms. (One shared arena instead, `M_ARENA_MAX=1`, also removed the faults
but slowed compilation and the LeNet-5 folder job by 10-15%.) The LeNet-5
train step is the same either way (6.41-6.44 against 6.42-6.49 ms).

The cost: the process keeps up to 2 GiB of freed memory instead of returning
it. `CNNJAX_MALLOC=default` leaves glibc and JAX as they are. It must run
before JAX's CPU backend starts, so the CLI calls it first.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

SETTINGS = ((M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, (1 << 31) - 1))


def keep_freed_memory(dispatch_inline: bool = True) -> bool:
    """Applies `SETTINGS` with `mallopt` and, with `dispatch_inline`, synchronous CPU dispatch.

    False where not (not glibc, or `CNNJAX_MALLOC=default`). A run of several
    processes keeps JAX's asynchronous dispatch (`dispatch_inline=False`): with
    computations inline, a resumed two-process sweep hung until its timeout
    (tests/tuning/test_sweep_processes.py; not traced further).
    """
    if os.environ.get("CNNJAX_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not all(mallopt(param, value) == 1 for param, value in SETTINGS):
        return False
    if dispatch_inline:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
