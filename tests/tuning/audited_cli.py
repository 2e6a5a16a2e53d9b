"""`python -m cnnjax.main ARGS`, recording what it writes under one folder.

Usage: python audited_cli.py WATCHED_DIR RECORD_FILE CNNJAX_ARGS...

Every write made from Python under WATCHED_DIR (an open for writing, a rename,
mkdir, remove, truncate, rmtree, an SQLite database opened) is listed in
RECORD_FILE at exit, one path a line. Files that native code writes on its own
(TensorStore's array files in an orbax checkpoint) are not seen.
"""

import atexit
import os
import runpy
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
EVENTS = ("os.rename", "os.mkdir", "os.remove", "os.truncate", "shutil.rmtree", "sqlite3.connect")

watched, record = os.path.realpath(sys.argv[1]), sys.argv[2]
seen: list[str] = []


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not ((isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & WRITE_FLAGS):
            return
        paths = [path]
    elif event in EVENTS:
        paths = args[:2] if event == "os.rename" else args[:1]  # a rename (or replace) writes its target
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)):
            real = os.path.realpath(os.fsdecode(path))
            if real == watched or real.startswith(watched + os.sep):
                seen.append(os.path.relpath(real, watched))


def _save():
    with open(record, "w") as f:
        f.writelines(p + "\n" for p in sorted(set(seen)))


atexit.register(_save)
sys.addaudithook(_hook)
sys.argv = ["cnnjax.main", *sys.argv[3:]]
runpy.run_module("cnnjax.main", run_name="__main__", alter_sys=True)
