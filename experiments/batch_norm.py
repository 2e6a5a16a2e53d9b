"""Batch normalisation: higher learning rates, less sensitivity to init (Ioffe & Szegedy 2015).

    python -m experiments.batch_norm --workdir=/tmp/exp/batch_norm [--variant=smoke|medium|full]

LeNet-5 with and without BN (after every conv and hidden dense layer) on
CIFAR-10, trained at several learning rates (init scale 1) and at several
`model.init_scale`s (one fixed learning rate). Both values are traced, so each
BN setting is one population. Writes:

- `table.csv`/`table.md`: the learning-rate sweep, seed-averaged: final train and
  val accuracy, steps until the windowed training accuracy first reaches the
  target, diverged seeds.
- `init_scale.csv`/`.md`: the same for the init-scale sweep.
- `summary.csv`/`.md`: per BN setting, the highest learning rate that still
  trains (not diverged, val accuracy above `trains_above`) and the spread of
  val accuracy over init scales.
- `batch_norm.png`: val accuracy against learning rate (log axis) and against
  init scale, BN vs no BN.
"""

from __future__ import annotations

import math

from experiments import common
from experiments.configs.base import WITH_MEDIUM
from experiments.variants import subset_train

LABELS = {False: "no BN", True: "BN"}
# Measured on a 2-core CPU: mapping LeNet members one at a time beats vmap (grouped convolutions).
PLAN = "sequential"


def steps_to(record, target: float) -> int | None:
    """First logged step whose windowed training accuracy reaches `target` (None: never)."""
    for step, _, accuracy in record.train_history:
        if accuracy >= target:
            return int(step)
    return None


def _mean(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else float("nan")


def _final_val(record) -> float:
    # A diverged member is frozen at its last finite state: count it as failed (chance is not earned).
    return 0.0 if record.diverged else record.val_accuracy


def _row(bn: bool, key: str, value: float, records, exp) -> dict:
    reach = [steps_to(r, exp.target_accuracy) for r in records]
    reached = [s for s in reach if s is not None]
    return {
        "model": LABELS[bn],
        key: value,
        "seeds": len(records),
        "diverged": sum(bool(r.diverged) for r in records),
        "train_accuracy": _mean(0.0 if r.diverged else r.train_accuracy for r in records),
        "val_accuracy": _mean(_final_val(r) for r in records),
        f"reached_{exp.target_accuracy:g}": f"{len(reached)}/{len(records)}",
        "steps_to_target": _mean(reached) if len(reached) == len(records) else None,
        "trains": sum(not r.diverged and r.val_accuracy > exp.trains_above for r in records) == len(records),
    }


def members(exp) -> list[dict]:
    """The trained members: the lr sweep at init scale 1, then the init-scale sweep, without and with BN."""
    grid = [(lr, 1.0) for lr in exp.learning_rates]
    grid += [(exp.scale_learning_rate, s) for s in exp.init_scales if (exp.scale_learning_rate, s) not in grid]
    return [
        {"model.batch_norm": bn, "optimizer.learning_rate": lr, "model.init_scale": scale, "seed": seed}
        for bn in (False, True)
        for lr, scale in grid
        for seed in exp.seeds
    ]


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    from experiments.configs.batch_norm import get_config

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    dataset = subset_train(dataset, exp.small_train_examples, config.data.preprocess)
    records = common.train(config, members(exp), dataset=dataset, plan=PLAN)

    def pick(bn, lr, scale):
        return [r for r in records if r.values["model.batch_norm"] == bn
                and r.values["optimizer.learning_rate"] == lr and r.values["model.init_scale"] == scale]

    lr_rows = [_row(bn, "learning_rate", lr, pick(bn, lr, 1.0), exp) for bn in (False, True) for lr in exp.learning_rates]
    scale_rows = [_row(bn, "init_scale", s, pick(bn, exp.scale_learning_rate, s), exp)
                  for bn in (False, True) for s in exp.init_scales]
    summary = []
    for bn in (False, True):
        trained = [r["learning_rate"] for r in lr_rows if r["model"] == LABELS[bn] and r["trains"]]
        accs = [r["val_accuracy"] for r in scale_rows if r["model"] == LABELS[bn]]
        summary.append({
            "model": LABELS[bn],
            "highest_lr_that_trains": max(trained) if trained else None,
            "best_val_accuracy_over_lr": max(r["val_accuracy"] for r in lr_rows if r["model"] == LABELS[bn]),
            "val_accuracy_min_over_init_scales": min(accs),
            "val_accuracy_max_over_init_scales": max(accs),
            "init_scale_spread": max(accs) - min(accs),
        })
    what = f"{variant}: LeNet-5, CIFAR-10 ({dataset.train.num_examples} training images), SGD, {records[0].steps} steps"
    common.write_table(workdir, lr_rows, title=f"{what}, init scale 1")
    common.write_table(workdir, scale_rows, name="init_scale", title=f"{what}, lr {exp.scale_learning_rate:g}")
    common.write_table(workdir, summary, name="summary", title=what)
    _plot(workdir, lr_rows, scale_rows, exp)
    return {"lr_rows": lr_rows, "scale_rows": scale_rows, "summary": {r["model"]: r for r in summary},
            "records": records}


def _plot(workdir, lr_rows, scale_rows, exp) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, rows, key, title in ((axes[0], lr_rows, "learning_rate", "init scale 1"),
                                 (axes[1], scale_rows, "init_scale", f"learning rate {exp.scale_learning_rate:g}")):
        for label, style in (("no BN", "o-"), ("BN", "s-")):
            mine = [r for r in rows if r["model"] == label]
            ax.plot([r[key] for r in mine], [100 * r["val_accuracy"] for r in mine], style, label=label)
        ax.axhline(100 * exp.trains_above, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(key.replace("_", " "))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("final val accuracy (%)\n(diverged = 0)")
    common.save_figure(fig, workdir, "batch_norm")


if __name__ == "__main__":
    common.main(run, variants=WITH_MEDIUM)
