"""The degradation problem: deeper plain nets train worse, deeper ResNets better (He et al. 2016, Fig. 6).

    python -m experiments.degradation --workdir=/tmp/exp/degradation [--variant=smoke|medium|full]

Trains a shallow and a deep plain net and the ResNets of the same depths (CIFAR
ResNets of section 4.2; `plain=True` drops the shortcuts, nothing else changes, so
each pair has the same parameter count). Each model is its own population (the
shapes differ); its seeds train together. The recipe is in
`experiments/configs/degradation.py`. Writes `table.csv`/`table.md` (model, depth,
params, final training error, final and best validation error, seed-averaged)
and `degradation.png` (training error against step: plain nets on the left,
ResNets on the right, as in the paper's figure).
"""

from __future__ import annotations

import dataclasses
import math

from experiments import common
from experiments.configs.base import WITH_MEDIUM

# Smoothing window (logging windows) for the plotted curves; the table uses raw values.
SMOOTH = 3


def downsample(dataset, factor: int, preprocess: str):
    """`dataset` with every image average-pooled by `factor` (and its statistics recomputed)."""
    import numpy as np

    from cnnjax.data import Split, compute_preprocess_stats

    if factor == 1:
        return dataset

    def pool(split):
        n, h, w, c = split.images.shape
        x = split.images.reshape(n, h // factor, factor, w // factor, factor, c).astype(np.float32)
        images = np.rint(x.mean(axis=(2, 4))).astype(np.uint8)
        return Split(images=images, labels=split.labels)

    train, validation, test = pool(dataset.train), pool(dataset.validation), pool(dataset.test)
    mean, std = compute_preprocess_stats(train.images, preprocess)
    return dataclasses.replace(dataset, train=train, validation=validation, test=test, mean=mean, std=std,
                               image_shape=tuple(int(d) for d in train.images.shape[1:]))


def model_label(plain: bool, depth: int) -> str:
    return f"{'plain' if plain else 'ResNet'}-{depth}"


def count_params(plain: bool, depth: int, widths, image_shape) -> int:
    import jax
    import jax.numpy as jnp

    from cnnjax.models import get_model

    model = get_model("resnet20_cifar", 10, depth=depth, widths=tuple(widths), plain=plain)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False))
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"])))


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _smooth(values, window: int):
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def members(exp) -> list[dict]:
    """The trained members: plain then ResNet, shallow then deep, every seed."""
    return [
        {"model.plain": plain, "model.depth": depth, "model.widths": tuple(exp.widths), "seed": seed}
        for plain in (True, False)
        for depth in exp.depths
        for seed in exp.seeds
    ]


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    from experiments.configs.degradation import get_config

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    dataset = downsample(dataset, exp.downsample, config.data.preprocess)
    shallow, deep = exp.depths
    models = [(plain, depth) for plain in (True, False) for depth in (shallow, deep)]
    records = common.train(config, members(exp), dataset=dataset, plan="vmap")

    rows, curves = [], {}
    for plain, depth in models:
        mine = [r for r in records if r.values["model.plain"] == plain and r.values["model.depth"] == depth]
        label = model_label(plain, depth)
        steps, _ = common.error_curve(mine[0])
        errors = [_mean(e) for e in zip(*(common.error_curve(r)[1] for r in mine))]
        curves[label] = (steps, errors)
        rows.append({
            "model": label,
            "depth": depth,
            "shortcuts": not plain,
            "params": count_params(plain, depth, exp.widths, dataset.image_shape),
            "seeds": len(mine),
            "steps": mine[0].steps,
            "first_train_error": errors[0],
            "final_train_error": _mean(errors[-exp.final_windows:]),
            "final_val_error": _mean(1.0 - r.val_accuracy for r in mine),
            "best_val_error": _mean(1.0 - r.best_val_accuracy for r in mine),
            "diverged": sum(bool(r.diverged) for r in mine),
        })
    title = (f"{variant}: CIFAR-10 {dataset.image_shape[0]}x{dataset.image_shape[1]}, "
             f"{dataset.train.num_examples} training images, widths {tuple(exp.widths)}, "
             f"seed-averaged over {len(exp.seeds)} seed(s); final train error = mean of the last "
             f"{exp.final_windows} logging windows ({exp.final_windows * config.log_every_steps} steps)")
    common.write_table(workdir, rows, title=title)
    _plot(workdir, curves, (shallow, deep))
    by_label = {r["model"]: r for r in rows}
    return {
        "rows": rows,
        "records": records,
        "curves": curves,
        "plain_gap": by_label[model_label(True, deep)]["final_train_error"]
        - by_label[model_label(True, shallow)]["final_train_error"],
        "resnet_gap": by_label[model_label(False, deep)]["final_train_error"]
        - by_label[model_label(False, shallow)]["final_train_error"],
        "finite": all(math.isfinite(e) for _, errs in curves.values() for e in errs),
    }


def _plot(workdir: str, curves, depths) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, plain, name in ((axes[0], True, "plain nets"), (axes[1], False, "ResNets")):
        for depth, color in zip(depths, ("tab:orange", "tab:red")):
            label = model_label(plain, depth)
            steps, errors = curves[label]
            ax.plot(steps, [100 * e for e in _smooth(errors, SMOOTH)], color=color, label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel(f"training error (%)\n(mean of {SMOOTH} logging windows)")
    common.save_figure(fig, workdir, "degradation")


if __name__ == "__main__":
    common.main(run, variants=WITH_MEDIUM)
