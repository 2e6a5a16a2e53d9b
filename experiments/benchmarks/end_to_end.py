"""End to end: the LeNet-5 CIFAR-folder job in cnnjax against the same recipe in PyTorch.

    python -m experiments.benchmarks.end_to_end --data_path=../shared/data/cifar10-train-jpg.tar.gz \
        [--num_epochs=15] [--rounds=1] [--compilation_cache=off|DIR] [--out=FILE.json]

Runs, alternating (the first framework changes every round), two whole commands
in fresh processes and workdirs:

    cnnjax --config=experiments/configs/image_folder.py --workdir=W --config.data.path=ARCHIVE \
        --config.model.name=lenet5 --config.num_epochs=15 --config.optimizer.learning_rate=0.05 \
        --compilation_cache=off
    python experiments/benchmarks/torch_folder_lenet.py --data_path=ARCHIVE --workdir=W --num_epochs=15

(the CLI as `python -m cnnjax.main`, the console script's entry point) and
prints each wall time, the ratio torch_s / cnnjax_s (above 1: cnnjax is
faster) and where each command's time went: the run's own `time/*_s` figures
(`summary.json` for cnnjax, printed by the PyTorch script), start-up (process
start to `train_and_evaluate`, i.e. imports, flags and config; from the
summary's write time minus its `wall_time_s`) and exit. `--probe` (default on)
then measures, once and outside the timed commands, how the data phase splits
into decoding and statistics, and whether a cnnjax run of an image folder
imports TensorFlow at all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "experiments", "configs", "image_folder.py")
TORCH_SCRIPT = os.path.join(ROOT, "experiments", "benchmarks", "torch_folder_lenet.py")
DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar10-train-jpg.tar.gz")


def commands(data_path: str, workdir: str, num_epochs: float, learning_rate: float,
             torch_threads: int = 0, compilation_cache: str = "off") -> dict[str, list[str]]:
    """The two commands of one round, by framework."""
    return {
        "cnnjax": [sys.executable, "-m", "cnnjax.main", f"--config={CONFIG}", f"--workdir={workdir}/cnnjax",
                   f"--config.data.path={data_path}", "--config.model.name=lenet5",
                   f"--config.num_epochs={num_epochs:g}", f"--config.optimizer.learning_rate={learning_rate:g}",
                   f"--compilation_cache={compilation_cache}"],
        "pytorch": [sys.executable, TORCH_SCRIPT, f"--data_path={data_path}", f"--workdir={workdir}/pytorch",
                    f"--num_epochs={num_epochs:g}", f"--learning_rate={learning_rate:g}",
                    f"--threads={torch_threads}"],
    }


def run_command(framework: str, command: list[str], workdir: str) -> dict:
    """Runs one whole command; returns its wall time and phase times (seconds)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    log = os.path.join(workdir, f"{framework}.log")
    start = time.time()
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    end = time.time()
    if done.returncode:
        with open(log) as f:
            raise RuntimeError(f"{framework} exited with {done.returncode}:\n{f.read()[-3000:]}")
    record = {"framework": framework, "wall_s": end - start, "command": " ".join(command)}
    if framework == "cnnjax":
        path = os.path.join(workdir, "cnnjax", "summary.json")
        with open(path) as f:
            summary = json.load(f)
        written = os.path.getmtime(path)
        phases = {k[len("time/"):-2]: v for k, v in summary.items() if k.startswith("time/") and "first" not in k}
        phases = {"startup": written - summary["wall_time_s"] - start, **phases}
        phases["write"] = summary["wall_time_s"] - sum(v for k, v in phases.items() if k != "startup")
        phases["exit"] = end - written
        record["accuracy"] = summary.get("eval/accuracy")
    else:
        with open(log) as f:
            lines = f.read().splitlines()
        phases = {line.split("=")[0][len("time/"):-2]: float(line.split("=")[1])
                  for line in lines if line.startswith("time/")}
        with open(os.path.join(workdir, "pytorch", "summary.json")) as f:
            summary = json.load(f)
        phases["startup"] = phases.pop("imports")
        phases["exit"] = record["wall_s"] - summary["wall_time_s"]
        record["accuracy"] = summary.get("eval/accuracy")
    record["phases"] = {k: round(v, 2) for k, v in phases.items()}
    return record


def probe(data_path: str) -> dict:
    """Decode vs statistics of the data phase, and TensorFlow's import, measured once in this process."""
    from cnnjax.data.image_folder import load_image_folder
    from cnnjax.data.preprocess import compute_preprocess_stats

    start = time.time()
    arrays, _ = load_image_folder(data_path)
    decode_s = time.time() - start
    start = time.time()
    compute_preprocess_stats(arrays["train"][0], "standardize")
    stats_s = time.time() - start
    check = ("import sys, cnnjax.main, cnnjax.training.train, cnnjax.data, tensorboardX, orbax.checkpoint; "
             "print('tensorflow' in sys.modules)")
    imports_tf = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                                env=dict(os.environ, PYTHONPATH=ROOT)).stdout.strip() == "True"
    timed = subprocess.run([sys.executable, "-c", "import time; t = time.time(); import tensorflow; "
                            "print(time.time() - t)"], capture_output=True, text=True)
    tf_s = float(timed.stdout.strip()) if timed.returncode == 0 else None
    return {"decode_s": round(decode_s, 2), "statistics_s": round(stats_s, 2),
            "cnnjax_imports_tensorflow": imports_tf, "tensorflow_import_s": tf_s and round(tf_s, 2)}


def print_report(records: list[dict], probed: dict | None) -> None:
    for framework in ("cnnjax", "pytorch"):
        mine = [r for r in records if r["framework"] == framework]
        phases = list(dict.fromkeys(k for r in mine for k in r["phases"]))
        print(f"\n{framework}: " + ", ".join(f"{r['wall_s']:.1f} s" for r in mine))
        for name in phases:
            print(f"  {name:<11}" + "".join(f"{r['phases'].get(name, 0):>9.2f}" for r in mine))
    ours = [r["wall_s"] for r in records if r["framework"] == "cnnjax"]
    theirs = [r["wall_s"] for r in records if r["framework"] == "pytorch"]
    print("\nround  cnnjax_s  pytorch_s  pytorch/cnnjax")
    for index, (a, b) in enumerate(zip(ours, theirs)):
        print(f"{index:>5} {a:>9.1f} {b:>10.1f} {b / a:>15.2f}x")
    if probed:
        print(f"\ndata phase, measured once here: decode {probed['decode_s']:.1f} s, statistics "
              f"{probed['statistics_s']:.1f} s; a cnnjax image-folder run imports TensorFlow: "
              f"{probed['cnnjax_imports_tensorflow']} (importing it alone: {probed['tensorflow_import_s']} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=DEFAULT_ARCHIVE, help="the CIFAR-10 JPEG archive (or a folder)")
    parser.add_argument("--num_epochs", type=float, default=15)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs; the first framework alternates")
    parser.add_argument("--torch_threads", type=int, default=0,
                        help="the PyTorch script's --threads (0: PyTorch's default). On a loaded shared CPU "
                             "PyTorch's default two threads ran LeNet-5 steps 6-13x slower than one thread")
    parser.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure decode vs statistics and the TensorFlow import once")
    parser.add_argument("--compilation_cache", default="off",
                        help="cnnjax's --compilation_cache: off (default) compiles in every round, as a first run "
                             "does; a directory lets the rounds after the first load the compiled programs")
    parser.add_argument("--out", help="write the records to this JSON file")
    args = parser.parse_args()
    data_path = os.path.abspath(args.data_path)
    if not os.path.exists(data_path):
        parser.exit(2, f"--data_path: {data_path} does not exist; pass the CIFAR-10 JPEG archive or a folder\n")
    if args.rounds < 1:
        parser.exit(2, f"--rounds={args.rounds}: must be at least 1\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"{os.cpu_count()} CPUs, load {load}; {args.num_epochs:g} epochs, {args.rounds} round(s), "
          f"PyTorch threads {args.torch_threads or 'default'}", flush=True)
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            order = ("cnnjax", "pytorch") if index % 2 == 0 else ("pytorch", "cnnjax")
            for framework in order:
                workdir = os.path.join(scratch, str(index))
                os.makedirs(workdir, exist_ok=True)
                command = commands(data_path, workdir, args.num_epochs, args.learning_rate,
                                   args.torch_threads, args.compilation_cache)[framework]
                record = run_command(framework, command, workdir)
                record["round"] = index
                records.append(record)
                print(f"round {index} {framework}: {record['wall_s']:.1f} s {record['phases']}", flush=True)
    probed = probe(data_path) if args.probe else None
    print_report(records, probed)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"records": records, "probe": probed, "num_epochs": args.num_epochs,
                       "torch_threads": args.torch_threads, "compilation_cache": args.compilation_cache,
                       "load_avg_at_start": load}, f, indent=1)


if __name__ == "__main__":
    main()
