"""Population throughput: member-steps/s of each execution plan vs P sequential single runs.

    python experiments/benchmarks/population.py [--quick] [--out=FILE.json]

LeNet-5 on mnist5k (batch 32) and CIFAR ResNet-20 on synthetic 32x32x3 batches
(batch 32). For each P the sequential figure is the single-model step (the one
`cnnjax.main` runs) called P times; each plan's figure is the population step.
All numbers are steady state (compile and warm-up excluded) and measured in one
run, alternating, so their ratios are fair on a noisy machine.
`--quick`: LeNet-5 only, P in {1, 16}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.config import base_config
from cnnjax.training.feeds import make_step_fn, member_keys
from cnnjax.training.optim import optimizer_from_config
from cnnjax.training.state import create_train_state
from cnnjax.training.train import build_model
from cnnjax.tuning import plans
from cnnjax.tuning.population import epoch_permutations, init_population, make_member_step


def synthetic(n, shape, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    split = SimpleNamespace(images=rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                            labels=rng.integers(0, classes, n).astype(np.int32), num_examples=n)
    return SimpleNamespace(name="synthetic", train=split, validation=split, test=split, num_classes=classes,
                           image_shape=shape, mean=np.full((1, 1, shape[-1]), 0.5, np.float32),
                           std=np.full((1, 1, shape[-1]), 0.25, np.float32))


def mnist5k():
    from cnnjax.data import load_dataset

    config = base_config()
    config.data.preprocess = "standardize"
    return load_dataset(config.data)


def _time(fn, repeats):
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / repeats


def measure(model_name, dataset, population_sizes, plan_names, repeats, batch_size=32, chunk_size=4,
            conv_impl=None, include_auto=True, on_warm=None, min_population_steps=1):
    """Member-steps/s of each plan (and of `auto`'s pick) against the single-run step called P times.

    `conv_impl`: the population's `model.conv_impl` (the sequential baseline
    keeps the default, what P separate runs would use). `on_warm(key, run)` is
    called once per compiled plan after its warm-up (e.g. to profile `run()`).
    Each round times `repeats` x P single steps and `repeats / (P / 4)` population
    steps, at least `min_population_steps` (a fast accelerator step needs several
    to outweigh the dispatch of the first).
    """
    config = base_config()
    config.model.name = model_name
    config.batch_size = batch_size
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.num_epochs = 1
    mean, std = jnp.asarray(dataset.mean), jnp.asarray(dataset.std)
    images, labels = jnp.asarray(dataset.train.images), jnp.asarray(dataset.train.labels)
    n = dataset.train.num_examples

    # Sequential baseline: the single-run step, called P times.
    model = build_model(config, dataset.num_classes)
    spe = n // batch_size
    tx = optimizer_from_config(config, spe, spe)
    init_key, data_key = member_keys(0)
    single = create_train_state(model, tx, init_key, dataset.image_shape)
    step = jax.jit(make_step_fn(config, mean, std), donate_argnums=0)
    perm = jax.random.permutation(data_key, n)
    holder = {"state": single}

    def single_step():
        holder["state"], metrics = step(holder["state"], data_key, images, labels, perm, 0)
        return metrics

    _time(single_step, 3)
    records = []
    population_config = config.copy_and_resolve_references()
    if conv_impl:
        population_config.model.conv_impl = conv_impl
    member_step = make_member_step(population_config, mean, std)
    for size in population_sizes:
        members = [{"optimizer.learning_rate": 0.01 * (1 + i % 4), "seed": i} for i in range(size)]
        pop = init_population(population_config, members, dataset.num_classes, dataset.image_shape, n)
        perms = epoch_permutations(pop.data_keys, 0, n, False)
        args = (pop.state, pop.alive, pop.data_keys, perms, jnp.asarray(0), images, labels)
        compiled = {}
        for name in plan_names:
            plan = plans.Plan(name, chunk_size=chunk_size if name == "chunked" else None)
            if name == "chunked" and size <= chunk_size:
                continue
            compiled[str(plan)] = jax.jit(plans.map_members(member_step, plan, False), donate_argnums=(0,))
        if include_auto:
            auto_plan, auto_fn, _ = plans.choose_plan(member_step, args, "auto")
            compiled[f"auto={auto_plan}"] = auto_fn
        states = {}
        for key, fn in compiled.items():
            states[key] = jax.tree_util.tree_map(jnp.copy, pop.state)
            holder2 = {"s": states[key]}

            def run(fn=fn, holder2=holder2, args=args):
                holder2["s"], alive, metrics = fn(holder2["s"], *args[1:])
                return metrics

            states[key] = run
            _time(run, 2)  # compile + warm-up
            if on_warm is not None:
                on_warm(key, run)
        seq_times, plan_times = [], {k: [] for k in compiled}
        for _ in range(3):  # alternate to spread machine noise evenly
            seq_times.append(_time(single_step, repeats) * size)
            for key in compiled:
                plan_times[key].append(_time(states[key], max(min_population_steps, repeats // max(1, size // 4))))
        seq = size / float(np.median(seq_times))
        for key, times in plan_times.items():
            rate = size / float(np.median(times))
            plan_name = "auto" if key.startswith("auto=") else key
            records.append({"model": model_name, "P": size, "plan": plan_name,
                            "picked": key.split("=", 1)[1] if key.startswith("auto=") else None,
                            "member_steps_per_s": rate, "sequential_member_steps_per_s": seq,
                            "ratio": rate / seq, "conv_impl": conv_impl or "auto",
                            "device": jax.devices()[0].device_kind})
            print(f"{model_name:16s} P={size:3d} {key:22s} conv {conv_impl or 'auto':7s} {rate:9.1f} member-steps/s   "
                  f"sequential {seq:9.1f}   ratio {rate / seq:5.2f}", flush=True)
    return records


def end_to_end(population_size: int, data_dir: str | None, sweep_flags: Sequence[str] = ()) -> dict:
    """Wall clock of a `population_size`-member sweep of the default job vs the CLI run once per member."""
    import subprocess
    import tempfile

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    default = os.path.join(root, "experiments", "configs", "default.py")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(root))
    common = [f"--config={default}", "--config.progress_bar=false"]
    if data_dir:
        common.append(f"--config.data.data_dir={data_dir}")
    space = "optimizer.learning_rate=loguniform(0.01, 0.1); optimizer.weight_decay=loguniform(1e-5, 1e-3)"
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "cnnjax.main", "--mode=sweep", f"--workdir={tmp}/sweep", *common,
                        f"--config.sweep.space_extra={space}", f"--config.sweep.population_size={population_size}",
                        *sweep_flags],
                       check=True, env=env, capture_output=True)
        sweep_s = time.time() - t0
        with open(f"{tmp}/sweep/results.json") as f:
            members = json.load(f)["members"]
        with open(f"{tmp}/sweep/summary.json") as f:
            summary = json.load(f)
        trials = {p["plan"]: p["step_ms"] for p in summary["plans"] if p["fits"]}
        picked = [p["plan"] for p in summary["plans"] if p.get("picked")]
        t0 = time.time()
        for m in members:
            subprocess.run([sys.executable, "-m", "cnnjax.main", f"--workdir={tmp}/run{m['member']}", *common,
                            f"--config.optimizer.learning_rate={m['optimizer.learning_rate']}",
                            f"--config.optimizer.weight_decay={m['optimizer.weight_decay']}"],
                           check=True, env=env, capture_output=True)
        cli_s = time.time() - t0
    timed = ", ".join(f"{name} {ms:.1f}" for name, ms in trials.items())
    print(f"end to end, {len(members)} trials of the default job (sweep flags {' '.join(sweep_flags) or 'none'}): "
          f"sweep {sweep_s:.1f} s (plan {', '.join(picked)}; planner's step ms: {timed}), "
          f"{len(members)} CLI runs {cli_s:.1f} s, ratio {cli_s / sweep_s:.2f}x", flush=True)
    return {"model": "lenet5", "P": len(members), "plan": "end_to_end", "picked": picked[0] if picked else None,
            "planner_step_ms": trials, "sweep_wall_s": sweep_s,
            "sequential_cli_wall_s": cli_s, "member_steps_per_s": None, "sequential_member_steps_per_s": None,
            "ratio": cli_s / sweep_s, "sweep_flags": list(sweep_flags), "device": jax.devices()[0].device_kind}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--end_to_end", action="store_true",
                        help="also time a 16-trial sweep of the default job against 16 CLI runs (minutes)")
    parser.add_argument("--data_dir", default=None, help="TFDS data_dir for the end-to-end runs")
    parser.add_argument("--sweep_flags", default="",
                        help="extra flags for the end-to-end sweep command, e.g. "
                             "'--cpu_devices=2 --config.sweep.mesh_devices=0'")
    args = parser.parse_args()
    plan_names = ["vmap", "chunked", "sequential"]
    records = measure("lenet5", mnist5k(), [1, 16] if args.quick else [1, 4, 16, 64], plan_names, args.repeats)
    if not args.quick:
        records += measure("resnet20_cifar", synthetic(512, (32, 32, 3)), [1, 4, 16, 64], plan_names,
                           max(2, args.repeats // 5))
    if args.end_to_end:
        records.append(end_to_end(16, args.data_dir, args.sweep_flags.split()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
