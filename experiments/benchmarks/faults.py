"""Fault injection: SIGKILL a run at seeded random moments, resume it, compare with an uninterrupted run.

    python experiments/benchmarks/faults.py --kills=20 [--seed=0] [--out=faults.json] [--sweep_kills=20]

The job is the default one (`experiments/configs/default.py:smoke`, 4 epochs of 8
steps, a checkpoint every 2 steps, metrics every step). For each kill point the
job is started in a fresh workdir and killed with SIGKILL at one moment of one of
three kinds, drawn with the seed:

- `random`: a uniform delay into the training window (measured on the reference run);
- `checkpoint`: while an orbax checkpoint is being written (its temporary directory exists);
- `metrics`: just as `metrics.jsonl` grows past a random size (during a metric write).

Then the same command is run again, to the end. A kill point counts as `resumed`
when that second run exits 0, and `identical` when its `summary.json` (timings
aside), its metrics (timings aside) and its final checkpoint equal the reference
bit for bit. Every workdir file is parsed twice, after the kill and after the
resume (JSON, JSON lines (a torn last line is allowed only before the resume),
CSV, PNG, TensorBoard record framing, where a torn last record is what TensorBoard
reads up to); a file that does not parse is `corrupted`.

The sweep half (`sweep_half`) does the same with `--mode=sweep` on
`experiments/configs/sweep_lr_wd.py:smoke`. It runs only when a killed sweep
leaves a checkpoint to resume from; otherwise it reports `not run`.

Prints the table and writes it (with every kill point) to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "experiments" / "configs" / "default.py"
SWEEP = ROOT / "experiments" / "configs" / "sweep_lr_wd.py"
SINGLE_FLAGS = (f"--config={DEFAULT}:smoke", "--config.num_epochs=4", "--config.checkpoint_every_steps=2",
                "--config.log_every_steps=1", "--config.progress_bar=False")
SWEEP_FLAGS = (f"--config={SWEEP}:smoke", "--mode=sweep", "--config.num_epochs=4",
               "--config.checkpoint_every_steps=2", "--config.progress_bar=False")
# Figures that measure time, not training: they differ between any two runs.
TIMING_KEYS = ("wall_time_s", "compile_s", "train/steps_per_sec", "train/examples_per_sec", "plans", "plan_times")
KINDS = ("random", "checkpoint", "metrics")
POLL_S = 0.001


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _command(flags, workdir: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cnnjax.main", *flags, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]


def _run(flags, workdir: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(flags, workdir, data_dir), capture_output=True, text=True, env=_env(), timeout=600)


# -- checking the files -----------------------------------------------------------


def _check_records(path: Path) -> str | None:
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
        elif name.startswith("events.out.tfevents"):
            # TensorBoard reads a file up to a torn last record, and a resumed run starts a new file,
            # so a torn tail loses at most the killed run's last unflushed scalars.
            problem = _check_records(path)
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
        if not path.is_file() or rel.startswith("checkpoints/") or path.name.endswith(".tmp"):
            continue
        problem = check_file(path, allow_torn_tail=allow_torn_tail)
        if problem:
            problems[rel] = problem
    return problems


# -- comparing results ------------------------------------------------------------


def _summary(workdir: Path) -> dict:
    summary = json.loads((workdir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _metrics(workdir: Path) -> list[dict]:
    from cnnjax.training.writers import read_metrics

    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(str(workdir))]


def _first_difference(got: list[dict], want: list[dict]) -> dict:
    """Where two metric logs first part (for the report of a kill point that did not match)."""
    for index, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return {"record": index, "resumed": a, "uninterrupted": b}
    return {"records": [len(got), len(want)], "extra": (got[len(want):] or want[len(got):])[:2]}


def _final_checkpoint(workdir: Path):
    """The leaves of the latest checkpoint under `workdir` (any depth), as numpy arrays by path."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    directories = [p.parent for p in workdir.rglob("_CHECKPOINT_METADATA")]
    if not directories:
        return {}
    latest = max(directories, key=lambda p: (len(p.parts), int(p.name) if p.name.isdigit() else -1))
    if not (latest / "default").exists():
        return {}
    tree = ocp.StandardCheckpointer().restore(latest / "default")
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves} | {"<step>": latest.name}


def _same_checkpoint(a: dict, b: dict) -> bool:
    import numpy as np

    if a.keys() != b.keys():
        return False
    return all(np.array_equal(a[k], b[k]) and np.asarray(a[k]).dtype == np.asarray(b[k]).dtype for k in a)


# -- killing ------------------------------------------------------------------------


def _training_started(workdir: Path) -> bool:
    return (workdir / "config.json").exists()


def _in_checkpoint_save(workdir: Path) -> bool:
    ckpt = workdir / "checkpoints"
    try:
        return any("tmp" in name for name in os.listdir(ckpt))
    except FileNotFoundError:
        return False


def _metrics_size(workdir: Path) -> int:
    try:
        return (workdir / "metrics.jsonl").stat().st_size
    except FileNotFoundError:
        return 0


def kill_once(flags, workdir: Path, data_dir: Path, kind: str, rng: random.Random, window_s: float,
              metrics_bytes: int) -> dict:
    """Starts the job, SIGKILLs it at a moment of `kind`; returns where it landed."""
    proc = subprocess.Popen(_command(flags, workdir, data_dir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    point = {"kind": kind}
    deadline = time.time() + 600
    while not _training_started(workdir) and proc.poll() is None and time.time() < deadline:
        time.sleep(POLL_S)
    started = time.time()
    if kind == "random":
        # The window was measured on one run; its last fifth may already be over in another.
        point["delay_s"] = round(rng.uniform(0.0, 0.8 * window_s), 4)
        while proc.poll() is None and time.time() - started < point["delay_s"]:
            time.sleep(POLL_S)
    elif kind == "checkpoint":
        wanted = rng.randint(1, 6)  # the n-th save seen in progress
        seen, inside = 0, False
        while proc.poll() is None and time.time() < deadline:
            now = _in_checkpoint_save(workdir)
            if now and not inside:
                seen += 1
                if seen == wanted:
                    time.sleep(rng.uniform(0.0, 0.01))
                    break
            inside = now
            time.sleep(POLL_S / 4)
        point["save"] = wanted
    else:
        threshold = rng.randint(1, max(2, metrics_bytes - 1))
        while proc.poll() is None and _metrics_size(workdir) < threshold and time.time() < deadline:
            time.sleep(POLL_S / 4)
        point["metrics_bytes"] = threshold
    point["killed_while_running"] = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    point["killed_after_s"] = round(time.time() - started, 3)
    point["in_checkpoint_save"] = _in_checkpoint_save(workdir)
    point["metrics_torn"] = (workdir / "metrics.jsonl").exists() and not (
        (workdir / "metrics.jsonl").read_bytes().endswith(b"\n") or _metrics_size(workdir) == 0)
    return point


def run_half(name: str, flags, kills: int, seed: int, root: Path, data_dir: Path) -> dict:
    """Reference run, then `kills` kill-and-resume trials of the job `flags`."""
    reference = root / f"{name}-reference"
    started = time.time()
    proc = subprocess.Popen(_command(flags, reference, data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    while not _training_started(reference) and proc.poll() is None:
        time.sleep(POLL_S)
    window_start = time.time()
    output, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted {name} run failed:\n{output[-3000:]}")
    window_s = time.time() - window_start
    expected = (_summary(reference), _metrics(reference), _final_checkpoint(reference))
    metrics_bytes = _metrics_size(reference)
    print(f"[{name}] reference: {time.time() - started:.1f} s, training window {window_s:.1f} s, "
          f"{metrics_bytes} bytes of metrics", flush=True)

    rng = random.Random(seed)
    points = []
    missed = 0  # draws that came after the run had already finished: drawn again, not counted
    attempt = 0
    while len(points) < kills and attempt < 3 * kills:
        index = len(points)
        workdir = root / f"{name}-{attempt:03d}"
        attempt += 1
        kind = KINDS[index % len(KINDS)] if index < len(KINDS) else rng.choice(KINDS)
        point = kill_once(flags, workdir, data_dir, kind, rng, window_s, metrics_bytes)
        if not point["killed_while_running"]:
            missed += 1
            # The machine got faster than when the window was measured: shrink it to what this run took.
            window_s = min(window_s, point["killed_after_s"])
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        point["corrupted_after_kill"] = check_workdir(workdir, allow_torn_tail=True)
        rerun = _run(flags, workdir, data_dir)
        point["resumed"] = rerun.returncode == 0
        if not point["resumed"]:
            point["error"] = (rerun.stderr or rerun.stdout)[-2000:]
        else:
            point["summary_equal"] = _summary(workdir) == expected[0]
            got = _metrics(workdir)
            point["metrics_equal"] = got == expected[1]
            if not point["metrics_equal"]:
                point["metrics_difference"] = _first_difference(got, expected[1])
            point["checkpoint_equal"] = _same_checkpoint(_final_checkpoint(workdir), expected[2])
        point["identical"] = bool(point["resumed"] and point["summary_equal"] and point["metrics_equal"]
                                  and point["checkpoint_equal"])
        point["corrupted_after_resume"] = check_workdir(workdir, allow_torn_tail=False)
        points.append(point)
        print(f"[{name}] kill {len(points)}/{kills}: {json.dumps({k: v for k, v in point.items() if k != 'error'})}",
              flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "job": " ".join(flags),
        "kill_points": len(points),
        "draws_after_the_run_had_finished": missed,
        "killed_in_checkpoint_save": sum(p["in_checkpoint_save"] for p in points),
        "killed_with_torn_metrics_line": sum(p["metrics_torn"] for p in points),
        "resumed": sum(p["resumed"] for p in points),
        "identical": sum(p["identical"] for p in points),
        "files_corrupted": sum(len(p["corrupted_after_kill"]) + len(p["corrupted_after_resume"]) for p in points),
        "points": points,
    }


def sweep_half(kills: int, seed: int, root: Path, data_dir: Path) -> dict:
    """The same for `--mode=sweep`; reports `not run` while a killed sweep leaves nothing to resume from."""
    probe = root / "sweep-probe"
    point = kill_once(SWEEP_FLAGS, probe, data_dir, "checkpoint", random.Random(seed), 0.0, 0)
    resumable = (probe / "checkpoints").exists() and point["killed_while_running"]
    shutil.rmtree(probe, ignore_errors=True)
    if not resumable:
        return {"job": " ".join(SWEEP_FLAGS), "status": "not run: a killed sweep leaves no checkpoint to resume from"}
    return run_half("sweep", SWEEP_FLAGS, kills, seed, root, data_dir)


def _row(name: str, half: dict) -> str:
    if "status" in half:
        return f"| {name} | {half['status']} | | | | | |"
    return (f"| {name} | {half['kill_points']} | {half['killed_in_checkpoint_save']} | "
            f"{half['killed_with_torn_metrics_line']} | {half['resumed']} | {half['identical']} | "
            f"{half['files_corrupted']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kill points for the single run")
    parser.add_argument("--sweep_kills", type=int, default=20, help="kill points for the sweep (0: skip the sweep)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="faults.json")
    parser.add_argument("--workroot", default=None, help="where the workdirs go (default: a temporary directory)")
    args = parser.parse_args()

    root = Path(args.workroot or tempfile.mkdtemp(prefix="cnnjax-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "tfds"
    results = {"seed": args.seed, "single": run_half("single", SINGLE_FLAGS, args.kills, args.seed, root, data_dir)}
    results["sweep"] = (sweep_half(args.sweep_kills, args.seed, root, data_dir) if args.sweep_kills
                        else {"status": "not run: --sweep_kills=0"})
    table = ["| job | kill points | in a checkpoint save | torn metrics line | resumed "
             "| identical final results | files corrupted |", "| --- | --- | --- | --- | --- | --- | --- |",
             _row("single run", results["single"]), _row("sweep", results["sweep"])]
    print("\n".join(table))
    results["table"] = table
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    if not args.workroot:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
