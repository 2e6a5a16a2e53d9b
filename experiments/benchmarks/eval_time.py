"""`--mode=eval` wall time against what training spends on the same evaluation.

    python experiments/benchmarks/eval_time.py --data_path=../shared/data/cifar10-train-jpg.tar.gz [--out=FILE.json]

Target (README, "After training"): the whole `cnnjax --mode=eval` command on a
10,000-image folder takes at most 1.5x the time a training run spends on one
evaluation of 10,000 examples plus its start-up.

1. Trains LeNet-5 briefly on the archive with a 10,000-image validation split
   (`data.validation_fraction=0.2`, 5,000 training images, two epochs: one validation in the middle):
   its `summary.json` gives the first evaluation's time (`time/first_eval_s`,
   compile included) and start-up is the process start to `train_and_evaluate`
   (the summary's write time minus its `wall_time_s`).
2. Writes a `test/<class>/` folder of 10,000 images (1,000 per class) taken from
   the archive, and times `cnnjax --mode=eval --workdir=RUN
   --config.data.path=FOLDER` as a whole command (`python -m cnnjax.main`),
   `--repeats` times (the figure is the median).

Prints the figures and the ratio eval_s / (first_eval_s + startup_s).
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


def _cli(args: list[str]) -> tuple[float, float]:
    """Runs `python -m cnnjax.main ARGS`; returns (start, end) wall-clock times."""
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "cnnjax.main", *args], capture_output=True, text=True,
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


def measure(archive: str, scratch: str, repeats: int) -> dict:
    run = os.path.join(scratch, "run")
    start, _ = _cli([f"--config={CONFIG}", f"--workdir={run}", f"--config.data.path={archive}",
                     "--config.model.name=lenet5", "--config.data.validation_fraction=0.2",
                     "--config.num_epochs=2", "--config.data.max_train_examples=5000", "--config.progress_bar=false"])
    summary_path = os.path.join(run, "summary.json")
    with open(summary_path) as f:
        summary = json.load(f)
    startup_s = os.path.getmtime(summary_path) - summary["wall_time_s"] - start
    folder = os.path.join(scratch, "folder")
    num_images = write_test_folder(archive, folder, NUM_EXAMPLES // 10)
    eval_s = []
    for _ in range(repeats):
        start, end = _cli(["--mode=eval", f"--workdir={run}", f"--config.data.path={folder}"])
        eval_s.append(end - start)
    with open(os.path.join(run, "eval.json")) as f:
        evaluated = json.load(f)["num_examples"]
    if evaluated != num_images:
        raise AssertionError(f"--mode=eval scored {evaluated} images; the folder holds {num_images}")
    reference = summary["time/first_eval_s"] + startup_s
    return {"num_examples": evaluated, "train_startup_s": round(startup_s, 2),
            "train_first_eval_s": summary["time/first_eval_s"], "eval_command_s": [round(s, 2) for s in eval_s],
            "ratio": round(statistics.median(eval_s) / reference, 3), "target": 1.5,
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=DEFAULT_ARCHIVE, help="the CIFAR-10 JPEG archive (.tar.gz)")
    parser.add_argument("--repeats", type=int, default=1, help="eval commands timed (median)")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    archive = os.path.abspath(args.data_path)
    if not os.path.isfile(archive) or not tarfile.is_tarfile(archive):
        parser.exit(2, f"--data_path: {archive} is not a tar archive; pass the CIFAR-10 JPEG archive\n")
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(archive, scratch, max(1, args.repeats))
    print(f"training: start-up {result['train_startup_s']:.2f} s, first evaluation of {result['num_examples']} "
          f"examples {result['train_first_eval_s']:.2f} s (compile included)")
    print(f"--mode=eval, whole command: {', '.join(f'{s:.2f} s' for s in result['eval_command_s'])}")
    print(f"ratio eval / (evaluation + start-up): {result['ratio']:.2f} (target <= {result['target']})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
