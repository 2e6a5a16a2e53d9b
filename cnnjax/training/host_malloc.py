"""Keep freed host memory in the process (glibc), so a CPU step does not fault its buffers in again.

XLA's CPU runtime allocates an execution's temporary buffers with `malloc`
and frees them when it ends; a train step's buffers hold every activation the
backward pass needs (hundreds of MB for a ResNet at batch 128). glibc hands out
blocks that large as fresh `mmap`ed pages, unless they fit one arena's heap
and stay under its mmap threshold, and returns them to the kernel on `free`, so
every step touches every page for the first time again: ResNet-20 at batch 128
took 76,000 minor page faults and 115 ms of system CPU time a step (235.8 ms
wall on the project's 2-core CPU). With one arena (the dispatching thread's
allocations then come from the main heap, which grows without the 64 MiB cap
of a thread's arena), a 1 GiB mmap threshold and a trim threshold of 2 GiB,
freed blocks are reused: 7,600 faults, 18 ms of system time, 185.1 ms a step.

The cost: the process keeps up to the trim threshold of freed memory instead
of returning it, and threads share one arena's lock. `CNNJAX_MALLOC=default`
leaves glibc's settings alone. It must run before the threads that allocate
exist (JAX's backend), so the CLI calls it first.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, 1 << 30), (M_TRIM_THRESHOLD, (1 << 31) - 1))


def keep_freed_memory() -> bool:
    """Applies `SETTINGS` with `mallopt`; False where not (not glibc, or `CNNJAX_MALLOC=default`)."""
    if os.environ.get("CNNJAX_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
