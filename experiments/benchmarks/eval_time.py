"""`--mode=eval` wall time against what training spends on the same evaluation.

    python -m experiments.benchmarks.eval_time --data_path=../shared/data/cifar10-train-jpg.tar.gz [--rounds=3]
        [--compilation_cache=off|DIR] [--out=FILE.json]

Target (README, "After training"): the whole `cnnjax --mode=eval` command on a
10,000-image folder takes at most 1.5x the time a training run spends on one
evaluation of 10,000 examples plus its start-up.

Each round (`--rounds`, alternating, so that a shared machine's load changes
hit both sides alike):

1. Trains LeNet-5 briefly on the archive with a 10,000-image validation split
   (`data.validation_fraction=0.2`, 5,000 training images, two epochs: one validation in the middle):
   its `summary.json` gives the first evaluation's time (`time/first_eval_s`,
   compile included) and start-up is the process start to `train_and_evaluate`
   (the summary's write time minus its `wall_time_s`).
2. Times `cnnjax --mode=eval --workdir=RUN --config.data.path=FOLDER` as a
   whole command (`python -m cnnjax.main`) on a `test/<class>/` folder of
   10,000 images (1,000 per class) taken from the archive (written once).

Prints each round's figures, its ratio eval_s / (first_eval_s + startup_s) and
the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "experiments", "configs", "image_folder.py")
DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "data", "cifar10-train-jpg.tar.gz")
NUM_EXAMPLES = 10_000


CACHE = {"flag": "off"}  # --compilation_cache of every command (main's --compilation_cache)


def _cli(args: list[str]) -> tuple[float, float]:
    """Runs `python -m cnnjax.main ARGS`; returns (start, end) wall-clock times."""
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "cnnjax.main", *args, f"--compilation_cache={CACHE['flag']}"],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
    end = time.time()
    if done.returncode:
        raise RuntimeError(f"cnnjax {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return start, end


def write_test_folder(archive: str, folder: str, per_class: int) -> int:
    """Copies the first `per_class` images of each class of `archive` into `folder/test/<class>/`."""
    counts: dict[str, int] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 2 or counts.get(parts[-2], 0) >= per_class:
                continue
            target = os.path.join(folder, "test", parts[-2], parts[-1])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(tar.extractfile(member).read())
            counts[parts[-2]] = counts.get(parts[-2], 0) + 1
    return sum(counts.values())


def _train(archive: str, run: str) -> tuple[float, float]:
    """Trains the reference run; returns its (start-up, first evaluation) in seconds."""
    start, _ = _cli([f"--config={CONFIG}", f"--workdir={run}", f"--config.data.path={archive}",
                     "--config.model.name=lenet5", "--config.data.validation_fraction=0.2",
                     "--config.num_epochs=2", "--config.data.max_train_examples=5000", "--config.progress_bar=false"])
    summary_path = os.path.join(run, "summary.json")
    with open(summary_path) as f:
        summary = json.load(f)
    return os.path.getmtime(summary_path) - summary["wall_time_s"] - start, summary["time/first_eval_s"]


def measure(archive: str, scratch: str, rounds: int) -> dict:
    """`rounds` times: a training run, then the eval command on it (alternating, so load changes hit both)."""
    folder = os.path.join(scratch, "folder")
    num_images = write_test_folder(archive, folder, NUM_EXAMPLES // 10)
    startup_s, first_eval_s, eval_s, ratios, loads = [], [], [], [], []
    for i in range(rounds):
        run = os.path.join(scratch, f"run{i}")
        startup, first_eval = _train(archive, run)
        start, end = _cli(["--mode=eval", f"--workdir={run}", f"--config.data.path={folder}"])
        with open(os.path.join(run, "eval.json")) as f:
            evaluated = json.load(f)["num_examples"]
        if evaluated != num_images:
            raise AssertionError(f"--mode=eval scored {evaluated} images; the folder holds {num_images}")
        startup_s.append(round(startup, 2))
        first_eval_s.append(first_eval)
        eval_s.append(round(end - start, 2))
        ratios.append(round((end - start) / (startup + first_eval), 3))
        loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else None)
    return {"num_examples": num_images, "train_startup_s": startup_s, "train_first_eval_s": first_eval_s,
            "eval_command_s": eval_s, "ratios": ratios, "ratio": statistics.median(ratios), "target": 1.5,
            "load_avg": loads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=DEFAULT_ARCHIVE, help="the CIFAR-10 JPEG archive (.tar.gz)")
    parser.add_argument("--rounds", type=int, default=1, help="training runs, each followed by an eval (median ratio)")
    parser.add_argument("--compilation_cache", default="off",
                        help="both commands' --compilation_cache: off (default) compiles every time, as a first "
                             "run does; a directory lets later rounds load the compiled programs")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    CACHE["flag"] = args.compilation_cache
    archive = os.path.abspath(args.data_path)
    if not os.path.isfile(archive) or not tarfile.is_tarfile(archive):
        parser.exit(2, f"--data_path: {archive} is not a tar archive; pass the CIFAR-10 JPEG archive\n")
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(archive, scratch, max(1, args.rounds))
    for i, ratio in enumerate(result["ratios"]):
        print(f"round {i}: training start-up {result['train_startup_s'][i]:.2f} s, its first evaluation of "
              f"{result['num_examples']} examples {result['train_first_eval_s'][i]:.2f} s (compile included); "
              f"--mode=eval, whole command {result['eval_command_s'][i]:.2f} s; ratio {ratio:.2f} "
              f"(load average {result['load_avg'][i]})")
    print(f"median ratio eval / (evaluation + start-up): {result['ratio']:.2f} (target <= {result['target']})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
