"""Run outputs that survive SIGKILL at any instant.

Whole files (JSON, CSV, PNG, HTML) go through `atomic_write`: written to a
temporary name beside the target, flushed to disk, then renamed over it, so a
reader sees the old or the new version, never half of one. `metrics.jsonl` is
append-only (one JSON object per line); a kill can leave a torn last line, which
`read_metrics` ignores and `MetricWriter` cuts off before appending again. In a
bucket (`gs://`) the same files go through `cnnjax.training.files`: whole
objects, and appends composed onto the log (see there).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Mapping

from absl import logging

from cnnjax.training import files
from cnnjax.training.files import atomic_write

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    value = float(value) if hasattr(value, "__float__") else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them readable.
    return value


def write_json(path: str, obj: Mapping[str, Any]) -> None:
    """Writes JSON atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=_plain)
        f.write("\n")


def save_figure(fig, path: str, **savefig_kwargs: Any) -> None:
    """`fig.savefig(path)`, atomically (the format comes from the file name)."""
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=fmt, **savefig_kwargs)


def _complete_length(path: str) -> int:
    """Bytes of `path` up to and including its last newline (a torn last line excluded)."""
    with open(path, "rb") as f:
        data = f.read()
    return data.rfind(b"\n") + 1


def read_metrics(path_or_workdir: str) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` (or of `workdir/metrics.jsonl`), oldest first.

    A torn last line (a run killed while appending) is dropped; so is any other
    line that is not a JSON object, with a warning. A missing file has no records.
    """
    path = path_or_workdir
    if files.isdir(path):
        path = os.path.join(path, METRICS_FILE)
    if not files.exists(path):
        return []
    data = files.read_bytes(path)
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        logging.warning("%s: dropped a torn last line (the writer was killed mid-line).", path)
    records = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            logging.warning("%s:%d is not a JSON object; skipped.", path, number)
            continue
        records.append(record)
    return records


def _tensorboardx():
    """Imports tensorboardX without PyTorch.

    tensorboardX's writer imports torch when it is installed, only to annotate
    types: 1.5-3 s of every run's start-up on the 2-core CPU. `import torch`
    fails while tensorboardX loads (it then uses numpy's types) and works
    again after; a torch already imported is left alone.
    """
    import sys

    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX

        return tensorboardX
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


class MetricWriter:
    """Appends metrics to `workdir/metrics.jsonl` and TensorBoard event files.

    On a local disk each record is appended (and flushed) as it comes. In a
    bucket, where every append is a request, records gather in memory and go
    up together at `flush()` (call it before each checkpoint, so the log holds
    every record the checkpoint has seen), at most `push_every_s` seconds
    apart, and at `close()`.
    """

    def __init__(self, workdir: str, tensorboard: bool = True, push_every_s: float = 30.0):
        self.path = os.path.join(workdir, METRICS_FILE)
        self._remote = files.is_remote(workdir)
        self._pending: list[str] = []
        self._push_every_s, self._pushed_at = push_every_s, time.time()
        self._file = None
        if self._remote:
            files.clean_remote_parts(self.path)  # an object is never torn; an append cut short leaves a part
        else:
            if os.path.exists(self.path):
                complete = _complete_length(self.path)
                if complete != os.path.getsize(self.path):
                    # A torn last line: appending after it would glue two records together.
                    os.truncate(self.path, complete)
            self._file = open(self.path, "a")
        self._tb = None
        if tensorboard:
            if not self._remote:
                drop_torn_event_records(workdir)
            self._tb = _tensorboardx().SummaryWriter(logdir=workdir, flush_secs=30)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        if self._remote:
            self._pending.append(json.dumps(record) + "\n")
            if time.time() - self._pushed_at >= self._push_every_s:
                self.flush()
        else:
            # One write call of one whole line: a kill leaves at most a torn last line.
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, int(step))

    def flush(self) -> None:
        """Makes every record written so far durable (a no-op locally, where each already is)."""
        if self._pending:
            files.append_remote(self.path, "".join(self._pending).encode("utf-8"))
            self._pending = []
        self._pushed_at = time.time()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def drop_torn_event_records(workdir: str) -> list[str]:
    """Cuts a torn last record off the TensorBoard event files in `workdir`; returns the files cut.

    A resumed run writes a new event file, so a torn record would stay at the end
    of the killed run's file, where readers such as `tf.data.TFRecordDataset`
    stop with a data-loss error. Each record is an 8-byte length, a 4-byte CRC,
    the data and a 4-byte CRC (TFRecord framing).
    """
    cut = []
    for name in sorted(os.listdir(workdir)) if os.path.isdir(workdir) else []:
        path = os.path.join(workdir, name)
        if not name.startswith("events.out.tfevents.") or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        end = 0
        with open(path, "rb") as f:
            while end + 12 <= size:
                f.seek(end)
                length = int.from_bytes(f.read(8), "little")
                if end + 16 + length > size:
                    break
                end += 16 + length
        if end != size:
            os.truncate(path, end)
            logging.warning("%s: dropped a torn last record (the writer was killed mid-record).", path)
            cut.append(path)
    return cut


def truncate_metrics(workdir: str, after_step: int) -> None:
    """Drops what a resumed run logs again: records past `after_step`, the final evaluation, a torn line.

    The final evaluation's record (the only one with `eval/` keys) is written after
    the last checkpoint, so a run resumed from that checkpoint evaluates and logs it again.
    """
    rewrite_metrics(workdir, lambda r: r.get("step", 0) <= after_step and not any(k.startswith("eval/") for k in r))


def rewrite_metrics(workdir: str, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrites `workdir/metrics.jsonl` (atomically) with the records `keep` accepts; a torn line goes."""
    path = os.path.join(workdir, METRICS_FILE)
    if not files.exists(path):
        return
    kept = [r for r in read_metrics(path) if keep(r)]
    with atomic_write(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
