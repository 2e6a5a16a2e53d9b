"""A population's step under each convolution lowering, and where its device time goes.

    python -m experiments.benchmarks.population_lowering                     # LeNet-5, P=32
    python -m experiments.benchmarks.population_lowering --model=resnet20_cifar --impls=xla,im2col
    python -m experiments.benchmarks.population_lowering --profile=5 --out=lowering.json

For each `--impls` entry the population (plan `vmap`, synthetic batches of 32
per member) runs with that `model.conv_impl`, against the single-run step
(default lowering) called P times: `population.py`'s measurement. Under vmap a
convolution whose kernel differs per member becomes one grouped convolution
(`feature_group_count` = P); `im2col` and `banded` become batched matrix
products instead. `--profile=N` traces N steps of each and prints the device
operations that took the most time (the `XLA Ops` line of the device's trace,
or a GPU's kernels from its stream lines; a CPU trace has neither, and it says so).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import tempfile
import time

import jax

from experiments.benchmarks import population

SHAPES = {"lenet5": (32, 32, 1), "resnet20_cifar": (32, 32, 3)}


def device_op_times(run, steps: int, top: int = 12) -> dict:
    """Traces `steps` calls of `run`; the device time per XLA op name (ms per step), the largest first."""
    with tempfile.TemporaryDirectory() as logdir:
        with jax.profiler.trace(logdir):
            for _ in range(steps):
                out = run()
            jax.block_until_ready(out)
        paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
        if not paths:
            return {"error": "the trace wrote no xplane.pb"}
        data = jax.profiler.ProfileData.from_file(paths[0])
    per_op = collections.Counter()
    kernels = collections.Counter()
    for plane in data.planes:
        if not plane.name.startswith("/device:"):
            continue
        for line in plane.lines:
            for event in line.events:
                if line.name == "XLA Ops":
                    per_op[event.name] += event.duration_ns
                elif line.name.startswith("Stream"):  # a GPU trace has kernels on its stream lines only
                    kernels[event.name] += event.duration_ns
    source = "XLA ops" if per_op else "GPU kernels"
    per_op = per_op or kernels
    if not per_op:
        seen = "; ".join(f"{plane.name}: {', '.join(line.name for line in plane.lines)}" for plane in data.planes)
        return {"error": f"no device ops in the trace (a CPU backend has none); planes: {seen[:600]}"}
    total = sum(per_op.values())
    return {"source": source, "device_ms_per_step": total / steps / 1e6,
            "top": [(name[:120], ns / steps / 1e6) for name, ns in per_op.most_common(top)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=sorted(SHAPES))
    parser.add_argument("--size", type=int, default=32, help="population size P")
    parser.add_argument("--impls", default="xla,im2col,banded", help="comma-separated conv_impl values")
    parser.add_argument("--plans", default="vmap", help="comma-separated plans")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, help="trace this many steps of each and list top ops")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    dataset = population.synthetic(1024, SHAPES[args.model])
    records, profiles = [], {}

    for impl in args.impls.split(","):
        def on_warm(key, run, impl=impl):
            if args.profile:
                profiles[f"{impl}/{key}"] = device_op_times(run, args.profile)

        t0 = time.perf_counter()
        records += population.measure(args.model, dataset, [args.size], args.plans.split(","), args.repeats,
                                      conv_impl=impl, include_auto=False, on_warm=on_warm, min_population_steps=10)
        records[-1]["wall_s"] = time.perf_counter() - t0
    for name, profile in profiles.items():
        print(f"\n{name}: " + (profile.get("error")
                                or f"{profile['device_ms_per_step']:.3f} device ms per step ({profile['source']})"))
        for op, ms in profile.get("top", []):
            print(f"  {ms:8.3f} ms  {op}")
    print(f"\n{'conv_impl':<10} {'plan':<12} {'member-steps/s':>15} {'sequential':>11} {'ratio':>6}")
    for r in records:
        print(f"{r['conv_impl']:<10} {r['plan']:<12} {r['member_steps_per_s']:>15.1f} "
              f"{r['sequential_member_steps_per_s']:>11.1f} {r['ratio']:>6.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"records": records, "profiles": profiles}, f, indent=1)


if __name__ == "__main__":
    main()
