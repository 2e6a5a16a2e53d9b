"""Train-step time: cnnjax against the same model and step in PyTorch, on one device.

    python experiments/benchmarks/step_time.py [--models=lenet5,resnet20_cifar] [--quick] [--out=FILE.json]

For each model, one process builds three steppers on the same random batch:
`cnnjax` (the library's `train_step`, jitted as a single run jits it, state donated, SGD with
momentum 0.9 from optax), `pytorch` (the same architecture as a `torch.nn.Module`,
eager, `torch.optim.SGD(momentum=0.9)`) and `pytorch_compile` (the module under
`torch.compile`, optimiser step eager). After warm-up (compilation included),
every round times `--steps` steps of each framework in turn, so a burst of load
from elsewhere on the machine lands on all of them alike; rounds rotate which
framework goes first, and each timed block follows `--settle` untimed steps (the
previous framework's threads still spin for a moment after its last step). A
figure is the median over rounds of the mean step time within a round. A
framework that cannot run (PyTorch not installed, `torch.compile` failing) gets a
record with `step_ms` None and the reason.

Models: `lenet5` (32x32x1), `resnet20_cifar` and `resnet56_cifar` (32x32x3, option-A shortcuts) and
`resnet50` (224x224x3, torchvision's layout); the PyTorch twins have the same
parameter counts (checked). `resnet50` runs only when named, or by default on a
GPU, where it uses bfloat16 (`precision='bfloat16'` in cnnjax, autocast in
PyTorch). Threads: PyTorch gets one intra-op thread per core; XLA keeps its
defaults (one intra-op pool with a thread per core, independent ops of the
program may run concurrently). Memory: by default (`--malloc=keep`) the process
first applies the CLI's host malloc settings
(`cnnjax.training.host_malloc.keep_freed_memory`), which both frameworks then
share; `--malloc=default` keeps glibc's.

Prints a table with the ratios pytorch_ms / cnnjax_ms (above 1: cnnjax is faster);
`--out` writes a JSON list with one record per measurement: `model`,
`batch_size`, `framework`, `step_ms`, `device`, and `precision`, `rounds`,
`steps_per_round`, `round_ms`, `params`, `error`, `load_avg`, versions,
`XLA_FLAGS` and `malloc`. On CPU, `XLA_FLAGS=--xla_cpu_use_fusion_emitters=false` (set before
the run) makes the LeNet-5 step about 5-10% faster on this project's machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
import optax

from cnnjax.kernels.conv import CONV_IMPL_CHOICES, outside_loops
from cnnjax.models import get_model
from cnnjax.training.feeds import cpu_step_shards
from cnnjax.training.host_malloc import keep_freed_memory
from cnnjax.training.state import count_params, create_train_state
from cnnjax.training.steps import train_step

FRAMEWORKS = ("cnnjax", "pytorch", "pytorch_compile")
INPUT_SHAPES = {"lenet5": (32, 32, 1), "resnet20_cifar": (32, 32, 3), "resnet56_cifar": (32, 32, 3),
                "resnet50": (224, 224, 3)}
NUM_CLASSES = {"lenet5": 10, "resnet20_cifar": 10, "resnet56_cifar": 10, "resnet50": 1000}
# Models whose convolutions take `conv_impl` (the others use Linen's nn.Conv).
CONV_IMPL_MODELS = ("lenet5", "resnet20_cifar", "resnet56_cifar")
LEARNING_RATE = 0.01
MOMENTUM = 0.9


def device_name() -> str:
    """The accelerator kind, or the CPU model and core count on a CPU backend."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return getattr(device, "device_kind", "") or device.platform
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu: {model or 'unknown'} ({os.cpu_count()} cores)"


# ---------------------------------------------------------------------------
# cnnjax


def cnnjax_stepper(name: str, images: np.ndarray, labels: np.ndarray, precision: str = "float32",
                   conv_impl: str | None = None) -> tuple[Callable[[], object], Callable[[object], None], int]:
    """Returns (step, wait, params): `step()` runs one library train step on the batch."""
    overrides = {"conv_impl": conv_impl} if conv_impl and name in CONV_IMPL_MODELS else {}
    model = get_model(name, NUM_CLASSES[name], **overrides)
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=LEARNING_RATE, momentum=MOMENTUM)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), images.shape[1:], precision=precision)
    batch = {"image": jax.device_put(images), "label": jax.device_put(labels)}
    # As a single run jits it: on a CPU, in the pieces `cpu_step_shards` picks (models without batch statistics).
    compiled = jax.jit(outside_loops(functools.partial(train_step, shards=cpu_step_shards(None))), donate_argnums=0)
    holder = {"state": state}

    def step():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics["loss"]

    return step, jax.block_until_ready, count_params(state.params)


# ---------------------------------------------------------------------------
# PyTorch twins (built only when torch is importable)


def torch_models():
    """The PyTorch twins of the benchmarked models, by cnnjax name."""
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class LeNet5(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(x.flatten(1)))
            return self.fc3(F.relu(self.fc2(x)))

    class CifarBlock(nn.Module):
        """Basic block with the parameter-free option-A shortcut."""

        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
            if self.extra:
                shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return F.relu(y + shortcut)

    class CifarResNet(nn.Module):
        def __init__(self, num_classes, blocks_per_stage=3, widths=(16, 32, 64)):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                      nn.ReLU())
            blocks, cin = [], widths[0]
            for stage, width in enumerate(widths):
                for index in range(blocks_per_stage):
                    blocks.append(CifarBlock(cin, width, 2 if stage and not index else 1))
                    cin = width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(widths[-1], num_classes)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    class Bottleneck(nn.Module):
        """1x1 - 3x3 (strided, torchvision's v1.5) - 1x1 with 4x expansion."""

        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return F.relu(self.body(x) + self.shortcut(x))

    class ResNet50(nn.Module):
        def __init__(self, num_classes, stages=(3, 4, 6, 3)):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for stage, repeats in enumerate(stages):
                width = 64 * 2**stage
                for index in range(repeats):
                    blocks.append(Bottleneck(cin, width, 2 if stage and not index else 1))
                    cin = 4 * width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    return {"lenet5": LeNet5, "resnet20_cifar": CifarResNet, "resnet50": ResNet50,
            "resnet56_cifar": functools.partial(CifarResNet, blocks_per_stage=9)}


def torch_stepper(name: str, images: np.ndarray, labels: np.ndarray, *, compiled: bool, precision: str,
                  on_gpu: bool) -> tuple[Callable[[], object], Callable[[object], None], int]:
    """Returns (step, wait, params) for the PyTorch twin; raises if torch cannot run it."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    device = torch.device("cuda" if on_gpu else "cpu")
    torch.manual_seed(0)
    model = torch_models()[name](NUM_CLASSES[name]).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    forward = torch.compile(model) if compiled else model
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    y = torch.from_numpy(labels).long().to(device)
    autocast = precision == "bfloat16"

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def wait(_):
        if on_gpu:
            torch.cuda.synchronize()

    return step, wait, params


# ---------------------------------------------------------------------------
# Measurement


def _time_steps(step: Callable[[], object], wait: Callable[[object], None], steps: int) -> float:
    start = time.perf_counter()
    out = None
    for _ in range(steps):
        out = step()
    wait(out)
    return (time.perf_counter() - start) / steps * 1e3


def measure(name: str, batch_size: int, frameworks: Sequence[str] = FRAMEWORKS, rounds: int = 7,
            steps: int = 20, warmup: int = 5, precision: str = "float32",
            conv_impl: str | None = None, settle: int = 2) -> list[dict]:
    """Times the train step of `name` in each framework, alternating; returns one record per framework."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, *INPUT_SHAPES[name])).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES[name], batch_size).astype(np.int32)
    on_gpu = jax.default_backend() == "gpu"
    base = {"model": name, "batch_size": batch_size, "device": device_name(), "precision": precision}
    steppers, records = {}, {}
    for framework in frameworks:
        record = dict(base, framework=framework, step_ms=None, error=None, params=None)
        records[framework] = record
        try:
            if framework == "cnnjax":
                step, wait, params = cnnjax_stepper(name, images, labels, precision, conv_impl)
                record["conv_impl"] = conv_impl or "auto"
                record["jax_version"] = jax.__version__
                record["xla_flags"] = os.environ.get("XLA_FLAGS", "")
            else:
                import torch

                torch.set_num_threads(os.cpu_count() or 1)
                step, wait, params = torch_stepper(name, images, labels, compiled=framework == "pytorch_compile",
                                                   precision=precision, on_gpu=on_gpu)
                record["torch_version"] = torch.__version__
                record["torch_threads"] = torch.get_num_threads()
            start = time.perf_counter()
            for _ in range(warmup):
                out = step()
            wait(out)
            record["warmup_s"] = round(time.perf_counter() - start, 2)
            record["params"] = params
            steppers[framework] = (step, wait)
        except Exception as error:  # noqa: BLE001 - any failure is reported, not fatal
            record["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    counts = {r["params"] for r in records.values() if r["params"] is not None}
    if len(counts) > 1:
        raise AssertionError(f"{name}: parameter counts differ between frameworks: "
                             f"{ {f: r['params'] for f, r in records.items()} }")
    round_ms = {framework: [] for framework in steppers}
    order = list(steppers)
    for index in range(rounds):
        # Each round starts with the next framework, and each timed block follows a
        # few untimed steps: the previous framework's worker threads spin for a while
        # after its last step, and without these the framework timed first in every
        # round would always pay for that.
        for framework in order[index % len(order):] + order[: index % len(order)]:
            step, wait = steppers[framework]
            if settle:
                _time_steps(step, wait, settle)
            round_ms[framework].append(_time_steps(step, wait, steps))
    for framework, times in round_ms.items():
        records[framework].update(step_ms=round(statistics.median(times), 3),
                                  round_ms=[round(t, 3) for t in times], rounds=rounds, steps_per_round=steps)
    if hasattr(os, "getloadavg"):
        load = [round(v, 2) for v in os.getloadavg()]
        for record in records.values():
            record["load_avg"] = load
    return list(records.values())


def print_table(records: Sequence[dict]) -> None:
    """One row per model and batch size: ms per framework and pytorch_ms / cnnjax_ms."""
    rows = {}
    for record in records:
        rows.setdefault((record["model"], record["batch_size"], record["precision"]), {})[record["framework"]] = record
    print(f"{'model':<16} {'batch':>5} {'precision':>9} {'cnnjax ms':>10} {'pytorch ms':>11} {'compile ms':>11} "
          f"{'eager/cnnjax':>13} {'compile/cnnjax':>15}")
    for (model, batch, precision), by in rows.items():
        step_ms = {framework: record["step_ms"] for framework, record in by.items()}
        base = step_ms.get("cnnjax")

        def ratio(framework, step_ms=step_ms, base=base):
            if step_ms.get(framework) is None or not base:
                return "-"
            return f"{step_ms[framework] / base:.2f}x"

        cells = [f"{step_ms[f]:.2f}" if step_ms.get(f) is not None else "-" for f in FRAMEWORKS]
        print(f"{model:<16} {batch:>5} {precision:>9} {cells[0]:>10} {cells[1]:>11} {cells[2]:>11} "
              f"{ratio('pytorch'):>13} {ratio('pytorch_compile'):>15}")
        for framework, record in by.items():
            if record.get("error"):
                print(f"  {framework}: not measured ({record['error']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="comma-separated: lenet5, resnet20_cifar, resnet56_cifar, resnet50 (default: the first two; "
                             "all three on a GPU)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per framework per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation included)")
    parser.add_argument("--settle", type=int, default=2, help="untimed steps before each timed block")
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="auto: bfloat16 for resnet50 on a GPU, float32 otherwise")
    parser.add_argument("--conv_impl", default=None, choices=CONV_IMPL_CHOICES,
                        help="cnnjax's convolution lowering for lenet5/resnet20_cifar (default: the model's)")
    parser.add_argument("--quick", action="store_true", help="LeNet-5 only, 3 rounds of 10 steps")
    parser.add_argument("--malloc", default="keep", choices=("keep", "default"),
                        help="keep: the CLI's host malloc settings (cnnjax/training/host_malloc.py), for both "
                             "frameworks alike; default: glibc's")
    parser.add_argument("--out", help="write the records to this JSON file")
    args = parser.parse_args()
    malloc = "keep" if args.malloc == "keep" and keep_freed_memory() else "default"  # before JAX's threads
    on_gpu = jax.default_backend() == "gpu"
    models = args.models or ("lenet5,resnet20_cifar,resnet50" if on_gpu else "lenet5,resnet20_cifar")
    if args.quick:
        models, args.rounds, args.steps, args.warmup = "lenet5", 3, 10, 3
    print(f"device: {device_name()}; jax {jax.__version__} ({jax.default_backend()}); "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; batch {args.batch_size}; "
          f"{args.rounds} rounds x {args.steps} steps per framework; malloc {malloc}", flush=True)
    records = []
    for name in models.split(","):
        precision = args.precision
        if precision == "auto":
            precision = "bfloat16" if on_gpu and name == "resnet50" else "float32"
        new = measure(name, args.batch_size, args.frameworks.split(","), args.rounds, args.steps, args.warmup,
                      precision, args.conv_impl, args.settle)
        for record in new:
            record["malloc"] = malloc
        records += new
        print_table(new)
        sys.stdout.flush()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
