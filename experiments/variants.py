"""Named variants of one training config, summarised as a table and a bar plot.

Shared by the pooling, preprocessing and regularisation experiments: each
variant is a dict of config path -> value (static values split the variants
into populations, traced ones share one); every variant trains with each seed,
and a row reports its seed-averaged training accuracy (the last logging window,
measured in training mode), final and best validation accuracy and the
train - val gap.
"""

from __future__ import annotations

import math
from typing import Any

from experiments import common


def subset_train(dataset, examples: int | None, preprocess: str):
    """`dataset` with a stratified `examples`-image subset of its training split (statistics recomputed).

    Lets experiments that train on fewer images share one loaded dataset
    (`common.load` keeps it) instead of reading the archive again.
    """
    import dataclasses

    from cnnjax.data import Split, compute_preprocess_stats
    from cnnjax.data.splits import stratified_subset

    if not examples or examples >= dataset.train.num_examples:
        return dataset
    keep = stratified_subset(dataset.train.labels, examples)
    train = Split(images=dataset.train.images[keep], labels=dataset.train.labels[keep])
    mean, std = compute_preprocess_stats(train.images, preprocess)
    return dataclasses.replace(dataset, train=train, mean=mean, std=std)


def train(config, variants: dict[str, dict[str, Any]], seeds, *, dataset, plan: str = "sequential"):
    """Trains every (variant, seed); returns {label: [record per seed]}."""
    members = [{**values, "seed": seed} for values in variants.values() for seed in seeds]
    records = common.train(config, members, dataset=dataset, plan=plan)
    out, i = {}, 0
    for label in variants:
        out[label] = records[i: i + len(seeds)]
        i += len(seeds)
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _std(values) -> float:
    values = list(values)
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def summary_row(label: str, records, **extra) -> dict[str, Any]:
    """Seed-averaged figures of one variant (a diverged seed counts as accuracy 0)."""
    train = [0.0 if r.diverged else r.train_accuracy for r in records]
    val = [0.0 if r.diverged else r.val_accuracy for r in records]
    row = {
        "variant": label,
        **extra,
        "seeds": len(records),
        "diverged": sum(bool(r.diverged) for r in records),
        "steps": records[0].steps,
        "train_accuracy": _mean(train),
        "val_accuracy": _mean(val),
    }
    if len(records) > 1:
        row["val_accuracy_std"] = _std(val)
    row["best_val_accuracy"] = _mean(0.0 if r.diverged else r.best_val_accuracy for r in records)
    row["gap"] = _mean(t - v for t, v in zip(train, val))
    return row


def bar_plot(workdir: str, rows, name: str, title: str,
             metrics=(("train_accuracy", "train"), ("val_accuracy", "val"))) -> str:
    """Grouped bars (one group per row, one bar per metric), in percent."""
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6))
    width = 0.8 / len(metrics)
    for k, (key, label) in enumerate(metrics):
        xs = [i + (k - (len(metrics) - 1) / 2) * width for i in range(len(rows))]
        values = [100 * r[key] for r in rows]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["variant"] for r in rows])
    ax.set_ylabel("accuracy / gap (%)" if any(key == "gap" for key, _ in metrics) else "accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.axhline(10, color="grey", ls=":", lw=1)  # chance on 10 classes
    ax.legend(fontsize=8)
    return common.save_figure(fig, workdir, name)


def report(workdir: str, rows, runs, *, variant: str, what: str, name: str, heading: str, **plot) -> dict:
    """Writes the table (titled `variant: what`) and the bar plot `name`.png of a variants experiment.

    Returns its rows by variant and the training records.
    """
    common.write_table(workdir, rows, title=f"{variant}: {what}")
    bar_plot(workdir, rows, name, f"{heading} ({what})", **plot)
    return {"rows": {r["variant"]: r for r in rows}, "records": runs}
