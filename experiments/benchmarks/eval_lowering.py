"""Evaluation time on CPU by convolution lowering: the run's jitted evaluation of a whole split.

    python -m experiments.benchmarks.eval_lowering [--models=lenet5,resnet20_cifar] [--examples=2048]
        [--batch_size=500] [--rounds=3] [--impls=im2col,auto,xla]

For each model, one process builds the evaluation every training run uses
(`cnnjax.training.feeds.make_eval_fn`: one compiled `lax.scan` over the padded
split's batches) once per `model.conv_impl`, on the same random 32x32x3 images,
and times them in turns over `--rounds` rounds (a burst of load from elsewhere
lands on all alike). A figure is the median over rounds; ratios are against
`im2col`, the lowering `auto` used for every non-banded CPU layer before it
took XLA's convolution where no gradient is taken. Compile time (first call)
is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.config import base_config
from cnnjax.data import pipeline
from cnnjax.training.feeds import make_eval_fn
from cnnjax.training.optim import optimizer_from_config
from cnnjax.training.state import create_train_state
from cnnjax.training.train import build_model
from experiments.benchmarks.step_time import device_name


def measure(model_name: str, impls: list[str], examples: int, batch_size: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (examples, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, examples).astype(np.int32)
    split = [jnp.asarray(a) for a in pipeline.pad_for_eval(images, labels, batch_size)]
    mean, std = np.full((1, 1, 3), 0.5, np.float32), np.full((1, 1, 3), 0.25, np.float32)
    programs = {}
    for impl in impls:
        config = base_config()
        config.model.name, config.model.conv_impl = model_name, impl
        model = build_model(config, 10)
        state = create_train_state(model, optimizer_from_config(config, 1, 1), jax.random.PRNGKey(0), (32, 32, 3))
        evaluate = make_eval_fn(mean, std)
        start = time.perf_counter()
        correct = float(jax.device_get(evaluate(state, *split))["correct"])
        programs[impl] = (evaluate, state, time.perf_counter() - start, correct)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl, (evaluate, state, _, _) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(evaluate(state, *split))
            times[impl].append(time.perf_counter() - start)
    reference = statistics.median(times[impls[0]])
    return [{"model": model_name, "conv_impl": impl, "eval_s": statistics.median(times[impl]),
             "ratio": reference / statistics.median(times[impl]), "first_call_s": programs[impl][2],
             "correct": programs[impl][3]} for impl in impls]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,resnet20_cifar")
    parser.add_argument("--impls", default="im2col,auto,xla", help="the first is the reference of the ratios")
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {device_name()}; jax {jax.__version__}; {args.examples} examples, batch {args.batch_size}")
    print(f"{'model':<16} {'conv_impl':<9} {'eval (s)':>9} {'vs first':>9} {'first call (s)':>15} {'correct':>8}")
    for model in args.models.split(","):
        for row in measure(model, args.impls.split(","), args.examples, args.batch_size, args.rounds):
            print(f"{row['model']:<16} {row['conv_impl']:<9} {row['eval_s']:>9.3f} {row['ratio']:>8.2f}x "
                  f"{row['first_call_s']:>15.2f} {row['correct']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
