"""Compile time of one jitted train step, by model: does it grow with depth?

    python experiments/benchmarks/compile_time.py [--models=a,b,...] [--out=FILE.json]

For each model: build it at batch 8 on 32x32x3 inputs, lower and compile (with
`jax.jit(step).lower(...).compile()`) a train step made of the forward pass in
training mode, the backward pass, the BN statistics update and a plain SGD
update, and time the lowering+compilation (tracing included, execution not).
A name suffixed `:unrolled` is built with `scan_blocks=False`, to show what
`nn.scan` saves. A throwaway compile of ResNet-20 runs first so that one-off start-up costs
do not land on the first model; each figure is the best of `--repeats` runs.
Prints a table; `--out` writes a JSON list of records with keys `model`,
`compile_s`, `lower_s`, `params`, `device`.

The repeated blocks of the CIFAR ResNets and pre-activation ResNets run under
`nn.scan`, so ResNet-1202 should compile in about the time of ResNet-20.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import optax

from cnnjax.models import get_model

DEFAULT_MODELS = (
    "resnet20_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
    "resnet110_cifar:unrolled",
    "resnet1202_cifar",
    "plain1202_cifar",
    "preact_resnet164",
    "preact_resnet1001",
    "resnet50",
    "resnet152",
    "densenet_bc100_k12",
)
BATCH = 8
INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def device_name() -> str:
    """The accelerator kind, or the platform (`cpu`) where no kind is reported."""
    device = jax.devices()[0]
    return getattr(device, "device_kind", "") or device.platform


def time_compile(name: str, repeats: int = 1) -> dict:
    """Lowers and compiles one train step of `name`; returns a result record."""
    base_name, _, variant = name.partition(":")
    overrides = {"scan_blocks": False} if variant == "unrolled" else {}
    model = get_model(base_name, NUM_CLASSES, **overrides)
    x = jnp.zeros((BATCH, *INPUT_SHAPE), jnp.float32)
    labels = jnp.zeros((BATCH,), jnp.int32)
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    # Abstract variables: the timing must not include running init.
    variables = jax.eval_shape(lambda: model.init(rngs, x, train=False))
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})

    def train_step(params, batch_stats, x, labels, key):
        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": key},
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"] if "batch_stats" in updates else {}

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return new_params, new_stats, loss

    best_total, best_lower = float("inf"), float("inf")
    for _ in range(repeats):
        # A fresh jit object each time, so nothing is reused from the last round.
        step = jax.jit(lambda *args: train_step(*args))
        start = time.perf_counter()
        lowered = step.lower(params, batch_stats, x, labels, jax.random.PRNGKey(2))
        lowered_at = time.perf_counter()
        lowered.compile()
        done = time.perf_counter()
        best_total = min(best_total, done - start)
        best_lower = min(best_lower, lowered_at - start)
    return {
        "model": name,
        "compile_s": round(best_total, 3),
        "lower_s": round(best_lower, 3),
        "params": sum(leaf.size for leaf in jax.tree.leaves(params)),
        "device": device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated names")
    parser.add_argument("--out", help="write the records to this JSON file")
    parser.add_argument("--repeats", type=int, default=2, help="report the best of this many")
    args = parser.parse_args()
    time_compile("resnet20_cifar")  # warm-up (one-off start-up costs), not reported
    records = []
    print(f"device: {device_name()}; train step at batch {BATCH}, input {INPUT_SHAPE}")
    print(f"{'model':<24} {'params':>12} {'lower_s':>8} {'compile_s':>10}")
    for name in args.models.split(","):
        record = time_compile(name, args.repeats)
        records.append(record)
        print(
            f"{name:<24} {record['params']:>12,} {record['lower_s']:>8.2f} {record['compile_s']:>10.2f}",
            flush=True,
        )
    base = next((r for r in records if r["model"] == "resnet20_cifar"), None)
    if base:
        for record in records:
            print(f"{record['model']:<24} {record['compile_s'] / base['compile_s']:.2f}x resnet20")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=2)


if __name__ == "__main__":
    main()
