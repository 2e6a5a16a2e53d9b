"""Workdir file checks for the fault-injection harness: does every output file parse as its kind?

JSON, JSON lines (a torn last line is allowed only before a resume), CSV, PNG,
TensorBoard record framing (a torn last record is what TensorBoard reads up to)
and SQLite (`PRAGMA integrity_check` on a copy with its journal). Checkpoints
are orbax's to check, temporary files nobody's.
"""

from __future__ import annotations

import csv
import json
import shutil
import struct
import tempfile
from pathlib import Path


def check_records(path: Path) -> str | None:
    """TensorBoard event file: length-prefixed records; a torn tail is what readers stop at."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            return "torn tail"
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        end = offset + 12 + length + 4
        if end > len(data):
            return "torn tail"
        offset = end
    return None


def _check_sqlite(path: Path) -> str | None:
    """Opens a copy (with its journal or WAL, which a reader would replay) and runs SQLite's integrity check."""
    import sqlite3

    with tempfile.TemporaryDirectory() as scratch:
        for side in ("", "-journal", "-wal", "-shm"):
            if Path(str(path) + side).exists():
                shutil.copy(str(path) + side, Path(scratch) / (path.name + side))
        connection = sqlite3.connect(Path(scratch) / path.name)
        try:
            (verdict,) = connection.execute("PRAGMA integrity_check").fetchone()
        finally:
            connection.close()
    return None if verdict == "ok" else f"integrity_check: {verdict}"


def check_file(path: Path, *, allow_torn_tail: bool) -> str | None:
    """None if `path` parses as its kind of file, else what is wrong."""
    name = path.name
    try:
        if name.endswith(".jsonl"):
            lines = path.read_bytes().split(b"\n")
            if lines[-1].strip() and not allow_torn_tail:
                return "torn last line"
            for line in lines[:-1]:
                if line.strip():
                    json.loads(line)
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows and any(len(r) != len(rows[0]) for r in rows):
                return "ragged rows"
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        elif name.endswith(".db"):
            return _check_sqlite(path)
        elif name.startswith("events.out.tfevents"):
            # TensorBoard reads a file up to a torn last record, and a resumed run starts a new file,
            # so a torn tail loses at most the killed run's last unflushed scalars.
            problem = check_records(path)
            return None if problem == "torn tail" else problem
    except Exception as err:  # noqa: BLE001 (any parse failure is the finding)
        return f"{type(err).__name__}: {err}"
    return None


def check_workdir(workdir: Path, *, allow_torn_tail: bool) -> dict[str, str]:
    """Every output file that does not parse, with why. Checkpoints are orbax's, temporary files nobody's."""
    problems = {}
    if not workdir.exists():
        return problems
    for path in sorted(workdir.rglob("*")):
        rel = path.relative_to(workdir).as_posix()
        if not path.is_file() or {"checkpoints", "checkpoints-unreadable"} & set(Path(rel).parts[:-1]) or path.name.endswith(".tmp"):
            continue
        problem = check_file(path, allow_torn_tail=allow_torn_tail)
        if problem:
            problems[rel] = problem
    return problems
