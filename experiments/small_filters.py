"""Stacks of 3x3 convolutions versus one large filter (Simonyan & Zisserman 2015, section 2.3).

    python experiments/small_filters.py --workdir=/tmp/exp/small_filters [--variant=smoke|full]

With C channels in and out and no biases, two 3x3 convs hold 2 * 9 C^2 = 18 C^2
weights and see a 5x5 window (the same as one 5x5 conv, 25 C^2); three 3x3
convs hold 27 C^2 and see 7x7 (one 7x7 conv: 49 C^2), with two or three
non-linearities instead of one. Part 1 (`counts.csv`) builds each stack from the
library's `Conv` layer, counts the initialised parameters and multiply-adds
(`cnnjax.summary.summarize` at 32x32xC) and measures the receptive field as the
support of the gradient of the centre output pixel with respect to the input
(next to the analytic 1 + sum(k - 1)). Part 2 (`table.csv`) trains two small
CNNs of the same number of blocks, each block either one 5x5 conv or two 3x3
convs (then 2x2 max pooling), on CIFAR-10 and reports their accuracy (not
asserted: at smoke size it is a few hundred steps on 2,000 images).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import common  # noqa: E402

# name -> kernel sizes of the stack
STACKS = {"two_3x3": (3, 3), "one_5x5": (5,), "three_3x3": (3, 3, 3), "one_7x7": (7,)}
CHANNELS = {"smoke": (16, 64), "full": (16, 64, 256)}
RF_SIZE = 17  # input side for the receptive-field probe (odd, larger than 7)
CNN_BLOCKS = {"small_filters_5x5": (5,), "small_filters_3x3": (3, 3)}


def _flax():
    from flax import linen as nn

    from cnnjax.models import layers

    class ConvStack(nn.Module):
        """Bias-free convs of `kernels` sizes, C channels in and out, SAME padding, optional ReLU between."""

        kernels: tuple[int, ...]
        features: int
        activation: str | None = None

        @nn.compact
        def __call__(self, x, *, train: bool = False):
            del train
            for index, k in enumerate(self.kernels):
                if index and self.activation:
                    x = layers.get_activation(self.activation)(x)
                x = layers.Conv(self.features, (k, k), padding="SAME", use_bias=False,
                                kernel_init=layers.get_init("he_normal"))(x)
            return x

    class FilterCNN(nn.Module):
        """`blocks` blocks of convs with `kernels` sizes (+ ReLU), each then 2x2 max pooling; GAP; dense."""

        num_classes: int = 10
        kernels: tuple[int, ...] = (3, 3)
        width: int = 32
        blocks: int = 2
        activation: str = "relu"
        kernel_init: str = "he_normal"
        init_scale: float = 1.0
        conv_impl: str = "auto"

        @nn.compact
        def __call__(self, x, *, train: bool):
            act = layers.get_activation(self.activation)
            init = layers.get_init(self.kernel_init, self.init_scale)
            for _ in range(self.blocks):
                for k in self.kernels:
                    x = act(layers.Conv(self.width, (k, k), padding="SAME", kernel_init=init, impl=self.conv_impl)(x))
                x = layers.pool(x, "max", 2, train=train)
            return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))

    return ConvStack, FilterCNN


@contextlib.contextmanager
def registered_cnns():
    """Registers the two CNNs in the model registry for the duration of a run."""
    from cnnjax import models

    _, cnn = _flax()
    added = []
    try:
        for name, kernels in CNN_BLOCKS.items():
            if name not in models.list_models():
                models.register(name, functools.partial(cnn, kernels=kernels))
                added.append(name)
        yield
    finally:
        for name in added:
            models.unregister(name)


def count_stacks(channels) -> list[dict]:
    """Parameters, MACs (32x32 map) and receptive field (analytic and measured) of every stack."""
    import jax
    import numpy as np

    from cnnjax.summary import summarize

    conv_stack, _ = _flax()
    rows = []
    for c in channels:
        for name, kernels in STACKS.items():
            summary = summarize(conv_stack(kernels, c), (32, 32, c))
            rows.append({"stack": name, "kernels": "+".join(f"{k}x{k}" for k in kernels), "C": c,
                         "params": summary.total_params, "params_per_C2": summary.total_params / c**2,
                         "formula": f"{sum(k * k for k in kernels)}C^2", "macs_32x32": summary.total_macs,
                         "nonlinearities": len(kernels), "rf_formula": 1 + sum(k - 1 for k in kernels)})
    # The receptive field does not depend on C: probe with 2 channels, ReLU between the convs.
    stacks = {name: conv_stack(kernels, 2, activation="relu") for name, kernels in STACKS.items()}
    x = jax.random.normal(jax.random.PRNGKey(1), (1, RF_SIZE, RF_SIZE, 2))
    centre = RF_SIZE // 2

    @jax.jit
    def probe(x):
        out = {}
        for index, (name, stack) in enumerate(stacks.items()):
            variables = stack.init(jax.random.PRNGKey(index), x)
            out[name] = jax.grad(lambda x, s=stack, v=variables: s.apply(v, x)[0, centre, centre].sum())(x)
        return out

    measured = {}
    for name, grad in probe(x).items():
        support = np.abs(np.asarray(grad[0])).sum(axis=-1) > 0
        rows_hit, cols_hit = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
        measured[name] = (int(rows_hit[-1] - rows_hit[0] + 1), int(cols_hit[-1] - cols_hit[0] + 1))
    for row in rows:
        height, width = measured[row["stack"]]
        row["rf_measured"] = height if height == width else f"{height}x{width}"
    return rows


def train_cnns(variant: str, data_path: str | None, workdir: str):
    """Trains the 5x5-block and 3x3-block CNNs; returns (rows, records)."""
    from cnnjax.summary import summarize
    from experiments.configs.small_filters import get_config

    from cnnjax import models

    config = get_config(variant)
    common.cifar_data(config, variant, data_path=data_path)
    dataset = common.load(config)
    with registered_cnns():
        members = [{"model.name": name} for name in CNN_BLOCKS]
        records = common.train(config, members, dataset=dataset)
        rows = []
        for name, record in zip(CNN_BLOCKS, records):
            model = models.get_model(name, 10, width=config.model.width, blocks=config.model.blocks)
            summary = summarize(model, (32, 32, 3))
            rows.append({"model": name, "block": "+".join(f"{k}x{k}" for k in CNN_BLOCKS[name]),
                         "blocks": config.model.blocks, "C": config.model.width, "conv_layers": summary.weight_layers - 1,
                         "params": summary.total_params, "macs": summary.total_macs, "steps": record.steps,
                         "train_accuracy": record.train_accuracy, "val_accuracy": record.val_accuracy,
                         "best_val_accuracy": record.best_val_accuracy, "diverged": record.diverged})
    return rows, records


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes counts.csv/md, table.csv/md and small_filters.png; returns {"counts": rows, "training": rows}."""
    common.check_variant(variant)
    counts = count_stacks(CHANNELS[variant])
    common.write_table(workdir, counts, name="counts",
                       title="Parameters (no biases), MACs at 32x32 and receptive field of conv stacks, C in = C out")
    rows, records = train_cnns(variant, data_path, workdir)
    common.write_table(workdir, rows, title=f"One 5x5 conv vs two 3x3 convs per block, CIFAR-10 ({variant})")
    _plot(workdir, counts, rows, records)
    return {"counts": counts, "training": rows}


def _plot(workdir: str, counts, rows, records) -> str:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    per_stack = {r["stack"]: r for r in counts if r["C"] == counts[0]["C"]}
    names = list(per_stack)
    left.bar(names, [per_stack[n]["params_per_C2"] for n in names], color=["C0", "C1", "C0", "C1"])
    for i, n in enumerate(names):
        left.text(i, per_stack[n]["params_per_C2"] + 1, f"{per_stack[n]['formula']}\nRF {per_stack[n]['rf_measured']}",
                  ha="center", fontsize=8)
    left.set_ylabel("parameters / C^2 (counted)")
    left.set_ylim(0, 60)
    left.set_title("Same receptive field, fewer weights", fontsize=9)
    for row, record in zip(rows, records):
        steps, errors = common.error_curve(record)
        right.plot(steps, errors, label=f"{row['block']} blocks (train)")
        if record.val_history:
            right.plot([s for s, _ in record.val_history], [1 - a for _, a in record.val_history], "o--",
                       color=right.lines[-1].get_color(), label=f"{row['block']} blocks (val)")
    right.set_xlabel("step")
    right.set_ylabel("error")
    right.legend(fontsize=8)
    right.set_title(f"{rows[0]['blocks']} blocks, C={rows[0]['C']}: one 5x5 vs two 3x3 per block", fontsize=9)
    return common.save_figure(fig, workdir, "small_filters.png")


if __name__ == "__main__":
    common.main(run)
