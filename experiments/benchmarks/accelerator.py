"""Every accelerator figure the README promises, in one command (about 8 minutes on one GPU).

    python experiments/benchmarks/accelerator.py --out=accelerator.json            # GPU / TPU host
    python experiments/benchmarks/accelerator.py --smoke --out=/tmp/smoke.json      # seconds, on CPU

Figures (rows of one table, and one JSON list):
- `population`: member-steps/s of a P=32 population of LeNet-5 and of CIFAR
  ResNet-20 under every execution plan (vmap, chunked, sequential, and the
  plan `auto` picks), against the single-model step run P times
  (`population.py`'s measurement; synthetic batches of 32).
- `train_step`: ResNet-20 (float32) and ResNet-50 (bfloat16) train step at
  batch 128 against PyTorch eager and `torch.compile` when torch is installed
  (`step_time.py`'s measurement, frameworks alternating).
- `speedrun`: the CIFAR-10 speed run's time to 94% excluding compile
  (`experiments/cifar10_speedrun.py`, variant `full`; needs the CIFAR-10 JPEG
  archive, `--data_path`).

`--smoke` shrinks everything (a P=2 population of a small MLP under every plan,
chunked with chunks of 1; a LeNet-5 train step at batch 4 against PyTorch eager
only, one round; the speed run's `smoke` variant) so the whole command runs on
a CPU in CI in well under a minute, almost all of it compiling. Each part runs inside `--budget_s` seconds: a
part that would start after the budget is spent, or that fails, gets a row
with `value` None and the reason, and the rest still run. Nothing here imports
TensorFlow (the speed run decodes JPEGs with PIL).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback

import jax

from experiments.benchmarks import population, step_time

PLANS = ("vmap", "chunked", "sequential")


def _row(figure: str, model: str, setting: str, value: float | None, unit: str, **extra) -> dict:
    return {"figure": figure, "model": model, "setting": setting, "value": value, "unit": unit,
            "reference": extra.pop("reference", None), "ratio": extra.pop("ratio", None),
            "error": extra.pop("error", None), **extra}


def population_rows(smoke: bool) -> list[dict]:
    """P=32 (smoke: P=2) population against sequential single-model steps, every plan."""
    size, repeats = (2, 1) if smoke else (32, 10)
    # Smoke: an MLP (compiles in a fraction of LeNet-5's time) and chunks of 1, so every plan still runs.
    models = [("mlp", (32, 32, 1))] if smoke else [("lenet5", (32, 32, 1)), ("resnet20_cifar", (32, 32, 3))]
    rows = []
    for model, shape in models:
        dataset = population.synthetic(64 if smoke else 1024, shape)
        batch = 8 if smoke else 32
        for record in population.measure(model, dataset, [size], list(PLANS), repeats, batch_size=batch,
                                         chunk_size=1 if smoke else 4, min_population_steps=1 if smoke else 10):
            setting = f"P={size} {record['plan']}" + (f" (picked {record['picked']})" if record["picked"] else "")
            rows.append(_row("population", model, setting, record["member_steps_per_s"], "member-steps/s",
                             reference=record["sequential_member_steps_per_s"], ratio=record["ratio"],
                             reference_name="sequential"))
    return rows


def train_step_rows(smoke: bool) -> list[dict]:
    """ResNet-20 float32 and ResNet-50 bfloat16 steps vs PyTorch (eager, compiled) where torch is installed."""
    try:
        import torch  # noqa: F401

        frameworks = ("cnnjax", "pytorch") if smoke else step_time.FRAMEWORKS
    except ImportError:
        frameworks = ("cnnjax",)
    on_accelerator = jax.default_backend() != "cpu"
    # Smoke: LeNet-5 (ResNet-20's compile alone takes ~40 s on a 2-core CPU); same rows, same code path.
    cases = [("lenet5", "float32")] if smoke else [("resnet20_cifar", "float32"), ("resnet50", "bfloat16")]
    batch, rounds, steps, warmup = (4, 1, 1, 1) if smoke else (128, 5, 10, 3)
    rows = []
    for model, precision in cases:
        records = step_time.measure(model, batch, frameworks, rounds, steps, warmup,
                                    precision if on_accelerator or model != "resnet50" else "float32")
        ours = next(r for r in records if r["framework"] == "cnnjax")
        for record in records:
            if record["framework"] == "cnnjax":
                continue
            ratio = record["step_ms"] / ours["step_ms"] if record["step_ms"] and ours["step_ms"] else None
            rows.append(_row("train_step", model, f"batch {batch} {record['precision']} vs {record['framework']}",
                             ours["step_ms"], "ms/step", reference=record["step_ms"], ratio=ratio,
                             reference_name=record["framework"], error=record["error"] or ours["error"]))
        if len(records) == 1:
            rows.append(_row("train_step", model, f"batch {batch} {ours['precision']}", ours["step_ms"], "ms/step",
                             error=ours["error"]))
    return rows


def speedrun_rows(smoke: bool, data_path: str | None) -> list[dict]:
    """Time to 94% (smoke: to the smoke variant's target) of the CIFAR-10 speed run, compile excluded."""
    from experiments import cifar10_speedrun

    config = cifar10_speedrun.get_config("smoke" if smoke else "full")
    if smoke:
        config.target_accuracy = 0.0  # a smoke run only shows the clock works
    with tempfile.TemporaryDirectory() as workdir:
        result = cifar10_speedrun.run(config, workdir, data_path=data_path, log=lambda _: None)
    summary = result["summary"]
    first = summary["runs"][0]
    reached = first["time_to_target_s"]
    setting = "smoke, to its first evaluation" if smoke else f"full, to {config.target_accuracy:.0%}"
    missed = (f"target not reached: final validation accuracy {first['final_accuracy']:.4f} "
              f"after {first['clock_s']:.2f} s of clock")
    return [_row("speedrun", summary["model"], f"{setting}, excl. compile",
                 reached, "s", compile_s=summary["compile_s"], final_accuracy=summary["mean_final_accuracy"],
                 clock_s=first["clock_s"], error=None if reached is not None else missed)]


# Cheapest first, so a spent budget costs the population figures (the longest compiles), not all.
PARTS = {"train_step": train_step_rows, "speedrun": speedrun_rows, "population": population_rows}


def write_json(rows: list[dict], path: str) -> None:
    """Writes `rows` to `path` atomically (a killed run leaves the previous parts' file, never a torn one)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    os.replace(tmp, path)


def run(smoke: bool, budget_s: float, data_path: str | None = None, parts=tuple(PARTS),
        out: str | None = None) -> list[dict]:
    """Runs each part in turn within `budget_s`; a part that fails or finds the budget spent gets an error row.

    With `out`, the rows so far are written there after every part, so a run
    stopped from outside still leaves the figures it took.
    """
    start = time.perf_counter()
    device = step_time.device_name()
    rows = []
    for name in parts:
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            rows.append(_row(name, "-", "-", None, "-", error=f"not measured (budget of {budget_s:.0f} s spent)"))
            continue
        try:
            new = PARTS[name](smoke, data_path) if name == "speedrun" else PARTS[name](smoke)
        except Exception as error:  # noqa: BLE001 - one failing part must not lose the others' figures
            traceback.print_exc()
            new = [_row(name, "-", "-", None, "-", error=f"{type(error).__name__}: {str(error).splitlines()[0]}")]
        for row in new:
            row["part_s"] = round(time.perf_counter() - start - elapsed, 1)
            row["device"] = device
        rows += new
        print_table(new, header=not any(r["figure"] != name for r in rows))
        if out:
            write_json(rows, out)
    return rows


def print_table(rows: list[dict], header: bool = True) -> None:
    if header:
        print(f"{'figure':<11} {'model':<15} {'setting':<46} {'cnnjax':>12} {'reference':>12} {'ratio':>7}")
    for row in rows:
        value = "not measured" if row["value"] is None else f"{row['value']:.4g} {row['unit']}"
        reference = "-" if row["reference"] is None else f"{row['reference']:.4g}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(f"{row['figure']:<11} {row['model']:<15} {row['setting']:<46} {value:>12} {reference:>12} {ratio:>7}")
        if row["error"]:
            print(f"  ({row['error']})")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds on a CPU")
    parser.add_argument("--out", help="write the rows to this JSON file")
    parser.add_argument("--budget_s", type=float, default=480.0, help="start no part after this many seconds")
    parser.add_argument("--data_path", default=None, help="CIFAR-10 JPEG archive for the speed run")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.exit(2, f"--parts: unknown {', '.join(unknown)}; valid: {', '.join(PARTS)}\n")
    print(f"device: {step_time.device_name()}; jax {jax.__version__}; smoke={args.smoke}", flush=True)
    rows = run(args.smoke, args.budget_s, args.data_path, parts, out=args.out)
    print("\nall figures:")
    print_table(rows)


if __name__ == "__main__":
    main()
