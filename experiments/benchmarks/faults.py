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

The sweep half (`sweep_half`) does the same with `--mode=sweep` (`SWEEP_FLAGS`:
`experiments/configs/sweep_lr_wd.py:smoke` as a successive-halving sweep of three
rungs, so three phases), with a fourth kind of moment, `phase`: right after the
last checkpoint of a phase appears (between two phases; the phase boundaries are
read off the reference sweep's checkpoints). It is `identical` when `results.csv`
(bytes), `results.json`, `summary.json` (less times, measured plan step times and
this workdir's paths), `metrics.jsonl` (no duplicated record), the population
arrays of the latest sweep checkpoint and the `best/<member>/` runs (checkpoint,
summary) equal the uninterrupted sweep's. `study.db` must pass SQLite's
`PRAGMA integrity_check`.

`--kills=0` or `--sweep_kills=0` skips that half.

Prints the table and writes it (with every kill point) to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from experiments.benchmarks.workdir_checks import check_workdir

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "experiments" / "configs" / "default.py"
SWEEP = ROOT / "experiments" / "configs" / "sweep_lr_wd.py"
SINGLE_FLAGS = (f"--config={DEFAULT}:smoke", "--config.num_epochs=4", "--config.checkpoint_every_steps=2",
                "--config.log_every_steps=1", "--config.progress_bar=False")
# Successive halving, 4 -> 2 -> 1 members over rungs of 2, 4 and 8 steps: three phases to kill between.
SWEEP_FLAGS = (f"--config={SWEEP}:smoke", "--mode=sweep", "--config.sweep.strategy=successive_halving",
               "--config.num_epochs=1", "--config.sweep.min_epochs=0.25", "--config.sweep.eta=2",
               "--config.checkpoint_every_steps=2", "--config.log_every_steps=1", "--config.progress_bar=False")
# Figures that measure time, not training: they differ between any two runs (so do the summary's `time/*`).
TIMING_KEYS = ("wall_time_s", "compile_s", "train/steps_per_sec", "train/examples_per_sec", "plans", "plan_times")
# Snapshot parts compared and reported but left out of `identical` (see `sweep_snapshot`).
REPORTED_APART = ("plans",)
KINDS = ("random", "checkpoint", "metrics")
SWEEP_KINDS = KINDS + ("phase",)
POLL_S = 0.001


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _command(flags, workdir: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "cnnjax.main", *flags, f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]


def _run(flags, workdir: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(flags, workdir, data_dir), capture_output=True, text=True, env=_env(), timeout=600)


# -- comparing results ------------------------------------------------------------


def _summary(workdir: Path) -> dict:
    summary = json.loads((workdir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS and not k.startswith("time/")}


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
    """The leaves of the latest run checkpoint under `workdir` (any depth), as numpy arrays by path."""
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


def _population_checkpoint(workdir: Path) -> dict:
    """The array leaves of the sweep's latest population checkpoint, by path."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from cnnjax.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(str(workdir))
    try:
        steps = checkpointer.all_steps()
        if not steps:
            return {}
        step = max(steps)
        tree = checkpointer._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    finally:
        checkpointer.close()
    leaves = jax.tree_util.tree_leaves_with_path(tree["state"])
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves} | {"<step>": str(step)}


def _same_checkpoint(a: dict, b: dict) -> bool:
    import numpy as np

    if a.keys() != b.keys():
        return False
    return all(np.array_equal(a[k], b[k]) and np.asarray(a[k]).dtype == np.asarray(b[k]).dtype for k in a)


def single_snapshot(workdir: Path) -> dict:
    return {"summary": _summary(workdir), "metrics": _metrics(workdir), "checkpoint": _final_checkpoint(workdir)}


def _sweep_summary(workdir: Path) -> dict:
    """summary.json less what two runs of one sweep legitimately differ in: times and this workdir's paths."""
    summary = _summary(workdir)
    summary.get("study", {}).pop("storage", None)
    summary.get("study", {}).pop("name", None)
    for run in summary.get("best_runs", []):
        run.pop("workdir", None)
    return summary


def sweep_snapshot(workdir: Path) -> dict:
    best = sorted((workdir / "best").iterdir()) if (workdir / "best").exists() else []
    return {
        "results.csv": (workdir / "results.csv").read_bytes(),
        "results.json": json.loads((workdir / "results.json").read_text()),
        "summary": _sweep_summary(workdir),
        # Reported apart (not in `identical`): a resumed sweep lists only the plans its own process compiled.
        "plans": [{k: v for k, v in plan.items() if k != "step_ms"}
                  for plan in json.loads((workdir / "summary.json").read_text()).get("plans", [])],
        "metrics": _metrics(workdir),
        "checkpoint": _population_checkpoint(workdir),
        "best checkpoint": {f"{b.name}/{k}": v for b in best for k, v in _final_checkpoint(b).items()},
        "best summary": {b.name: _summary(b) for b in best},
    }


def compare(got: dict, want: dict) -> dict:
    """Which parts of two snapshots agree, with where the metric logs part when they do not."""
    out = {"equal": {key: (_same_checkpoint(got[key], want[key]) if "checkpoint" in key else got[key] == want[key])
                     for key in want}}
    if not out["equal"]["metrics"]:
        out["metrics_difference"] = _first_difference(got["metrics"], want["metrics"])
    keys = [(r.get("phase"), r.get("step"), r.get("member"), "val/accuracy" in r) for r in got["metrics"]]
    out["duplicated_metric_records"] = len(keys) - len(set(keys))
    return out


# -- killing ------------------------------------------------------------------------


def _training_started(workdir: Path) -> bool:
    return (workdir / "config.json").exists()


def _checkpoint_names(workdir: Path) -> list[str]:
    try:
        return os.listdir(workdir / "checkpoints")
    except FileNotFoundError:
        return []


def _in_checkpoint_save(workdir: Path) -> bool:
    return any("tmp" in name for name in _checkpoint_names(workdir))


def _metrics_size(workdir: Path) -> int:
    try:
        return (workdir / "metrics.jsonl").stat().st_size
    except FileNotFoundError:
        return 0


def phase_boundaries(names) -> list[str]:
    """The last checkpoint of every phase but the final one (sweep checkpoints are 1000 * step + phase)."""
    steps = sorted(int(n) for n in names if n.isdigit())
    last = {}
    for step in steps:
        last[step % 1000] = step
    return [str(last[phase]) for phase in sorted(last)[:-1]]


def kill_once(flags, workdir: Path, data_dir: Path, kind: str, rng: random.Random, reference: dict) -> dict:
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
        point["delay_s"] = round(rng.uniform(0.0, 0.8 * reference["window_s"]), 4)
        while proc.poll() is None and time.time() - started < point["delay_s"]:
            time.sleep(POLL_S)
    elif kind == "checkpoint":
        wanted = rng.randint(1, max(1, min(6, reference["saves"])))  # the n-th save seen in progress
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
    elif kind == "phase":
        # Right after the last checkpoint of a phase appears: between two phases.
        point["checkpoint"] = rng.choice(reference["boundaries"])
        while proc.poll() is None and not (workdir / "checkpoints" / point["checkpoint"]).exists() \
                and time.time() < deadline:
            time.sleep(POLL_S / 4)
    else:
        threshold = rng.randint(1, max(2, reference["metrics_bytes"] - 1))
        while proc.poll() is None and _metrics_size(workdir) < threshold and time.time() < deadline:
            time.sleep(POLL_S / 4)
        point["metrics_bytes"] = threshold
    point["killed_while_running"] = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    point["killed_after_s"] = round(time.time() - started, 3)
    point["in_checkpoint_save"] = _in_checkpoint_save(workdir)
    point["checkpoints_left"] = sorted(n for n in _checkpoint_names(workdir) if n.isdigit())
    point["metrics_torn"] = (workdir / "metrics.jsonl").exists() and not (
        (workdir / "metrics.jsonl").read_bytes().endswith(b"\n") or _metrics_size(workdir) == 0)
    return point


def _reference_run(name: str, flags, workdir: Path, data_dir: Path) -> dict:
    """The uninterrupted run, watched: its training window and every checkpoint it wrote."""
    started = time.time()
    proc = subprocess.Popen(_command(flags, workdir, data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    while not _training_started(workdir) and proc.poll() is None:
        time.sleep(POLL_S)
    window_start, names = time.time(), set()
    while proc.poll() is None:
        names.update(n for n in _checkpoint_names(workdir) if n.isdigit())
        time.sleep(0.005)
    reader.join(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted {name} run failed:\n{''.join(output)[-3000:]}")
    names.update(n for n in _checkpoint_names(workdir) if n.isdigit())
    reference = {"window_s": time.time() - window_start, "saves": len(names), "metrics_bytes": _metrics_size(workdir),
                 "boundaries": phase_boundaries(names)}
    print(f"[{name}] reference: {time.time() - started:.1f} s, training window {reference['window_s']:.1f} s, "
          f"{reference['metrics_bytes']} bytes of metrics, {len(names)} checkpoints, phase boundaries "
          f"{reference['boundaries']}", flush=True)
    return reference


def run_half(name: str, flags, kills: int, seed: int, root: Path, data_dir: Path, *,
             snapshot=single_snapshot, kinds=KINDS) -> dict:
    """Reference run, then `kills` kill-and-resume trials of the job `flags`."""
    reference = _reference_run(name, flags, root / f"{name}-reference", data_dir)
    expected = snapshot(root / f"{name}-reference")
    rng = random.Random(seed)
    points = []
    missed = 0  # draws that came after the run had already finished: drawn again, not counted
    attempt = 0
    while len(points) < kills and attempt < 3 * kills:
        index = len(points)
        workdir = root / f"{name}-{attempt:03d}"
        attempt += 1
        kind = kinds[index % len(kinds)] if index < len(kinds) else rng.choice(kinds)
        point = kill_once(flags, workdir, data_dir, kind, rng, reference)
        if not point["killed_while_running"]:
            missed += 1
            # The machine got faster than when the window was measured: shrink it to what this run took.
            reference["window_s"] = min(reference["window_s"], point["killed_after_s"])
            shutil.rmtree(workdir, ignore_errors=True)
            continue
        point["corrupted_after_kill"] = check_workdir(workdir, allow_torn_tail=True)
        rerun = _run(flags, workdir, data_dir)
        point["resumed"] = rerun.returncode == 0
        if point["resumed"]:
            point.update(compare(snapshot(workdir), expected))
        else:
            point["error"] = (rerun.stderr or rerun.stdout)[-2000:]
        point["identical"] = bool(point["resumed"] and not point["duplicated_metric_records"] and all(
            same for key, same in point["equal"].items() if key not in REPORTED_APART))
        point["corrupted_after_resume"] = check_workdir(workdir, allow_torn_tail=False)
        points.append(point)
        print(f"[{name}] kill {len(points)}/{kills}: {json.dumps({k: v for k, v in point.items() if k != 'error'})}",
              flush=True)
        if point["identical"]:
            shutil.rmtree(workdir, ignore_errors=True)  # kept otherwise, to look at
    return {
        "job": " ".join(flags),
        "kill_points": len(points),
        "kinds": {kind: sum(p["kind"] == kind for p in points) for kind in kinds},
        "draws_after_the_run_had_finished": missed,
        "killed_in_checkpoint_save": sum(p["in_checkpoint_save"] for p in points),
        "killed_with_torn_metrics_line": sum(p["metrics_torn"] for p in points),
        "resumed": sum(p["resumed"] for p in points),
        "identical": sum(p["identical"] for p in points),
        "summary_plans_differ": sum(p["resumed"] and not p["equal"].get("plans", True) for p in points),
        "files_corrupted": sum(len(p["corrupted_after_kill"]) + len(p["corrupted_after_resume"]) for p in points),
        "points": points,
    }


def sweep_half(kills: int, seed: int, root: Path, data_dir: Path) -> dict:
    """The same for `--mode=sweep`, with kills between two phases as well."""
    return run_half("sweep", SWEEP_FLAGS, kills, seed, root, data_dir, snapshot=sweep_snapshot, kinds=SWEEP_KINDS)


def _row(name: str, half: dict) -> str:
    if "status" in half:
        return f"| {name} | {half['status']} | | | | | |"
    return (f"| {name} | {half['kill_points']} | {half['killed_in_checkpoint_save']} | "
            f"{half['killed_with_torn_metrics_line']} | {half['resumed']} | {half['identical']} | "
            f"{half['files_corrupted']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kill points for the single run (0: skip it)")
    parser.add_argument("--sweep_kills", type=int, default=20, help="kill points for the sweep (0: skip the sweep)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="faults.json")
    parser.add_argument("--workroot", default=None, help="where the workdirs go (default: a temporary directory)")
    args = parser.parse_args()
    if args.kills < 0 or args.sweep_kills < 0:
        parser.error("--kills and --sweep_kills must be >= 0")

    root = Path(args.workroot or tempfile.mkdtemp(prefix="cnnjax-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    data_dir = root / "tfds"
    results = {"seed": args.seed}
    results["single"] = (run_half("single", SINGLE_FLAGS, args.kills, args.seed, root, data_dir) if args.kills
                         else {"status": "not run: --kills=0"})
    results["sweep"] = (sweep_half(args.sweep_kills, args.seed, root, data_dir) if args.sweep_kills
                        else {"status": "not run: --sweep_kills=0"})
    table = ["| job | kill points | in a checkpoint save | torn metrics line | resumed "
             "| identical final results | files corrupted |", "| --- | --- | --- | --- | --- | --- | --- |",
             _row("single run", results["single"]), _row("sweep", results["sweep"])]
    print("\n".join(table))
    results["table"] = table
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, default=str)
    if not args.workroot:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
