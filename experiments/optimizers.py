"""SGD, momentum, Nesterov, AdaGrad, AdaDelta, RMSprop and Adam, each at its own tuned learning rate.

    python -m experiments.optimizers --workdir=/tmp/exp/optimizers [--variant=smoke|full]

Same model (LeNet-5), data (CIFAR-10), batch size, epochs and constant
learning rate for all; only the update rule differs. Stage 1 trains every
optimiser over its own log grid of learning rates (`experiment.grids` in
`experiments/configs/optimizers.py`) and keeps, per optimiser, the lr with the
best validation accuracy; all members form one population with one compiled
program (`experiments/mixed_population.py`; `experiment.trainer = "library"`
uses `common.train`, one population per optimiser). Stage 2 (`experiment.stage2_seeds` > 0)
retrains each optimiser at its tuned lr with fresh seeds; otherwise the
stage-1 runs of the winners are reported. Writes `table.csv/md` (one row per
optimiser), `grid.csv/md` (every member of stage 1) and `optimizers.png`
(training loss vs step at the tuned lrs; validation accuracy vs lr).
"""

from __future__ import annotations

import math
import statistics

from experiments import common

TRAINERS = ("mixed", "library")


def _score(record) -> float:
    """Selection score: best validation accuracy; a diverged member never wins."""
    acc = record.best_val_accuracy
    return -1.0 if record.diverged or not math.isfinite(acc) else acc


def pick_best(records) -> object:
    """The record with the best validation accuracy (ties: lower final training loss)."""
    def key(r):
        loss = r.train_loss if math.isfinite(r.train_loss) else math.inf
        return (_score(r), -loss)

    return max(records, key=key)


def _fmt_lrs(lrs) -> str:
    return ", ".join(f"{lr:g}" for lr in lrs)


def train(config, members, dataset):
    """`mixed_population.train_mixed` (one program for every optimiser) or `common.train` (one per optimiser)."""
    trainer = config.experiment.trainer
    if trainer not in TRAINERS:
        raise ValueError(f"Unknown experiment.trainer {trainer!r}; valid choices: {', '.join(TRAINERS)}")
    if trainer == "library":
        return common.train(config, members, dataset=dataset, plan=config.sweep.plan)
    from experiments.mixed_population import train_mixed

    return train_mixed(config, members, dataset=dataset, plan=config.sweep.plan)


def tune(config, dataset, grids: dict[str, tuple[float, ...]]):
    """Stage 1: every optimiser's grid trained together; returns {name: [records in grid order]}."""
    members = [{"optimizer.name": name, "optimizer.learning_rate": float(lr)}
               for name, lrs in grids.items() for lr in lrs]
    records = train(config, members, dataset)
    out, i = {}, 0
    for name, lrs in grids.items():
        out[name] = records[i:i + len(lrs)]
        i += len(lrs)
    return out


def confirm(config, dataset, tuned: dict[str, float], seeds: int):
    """Stage 2: each optimiser at its tuned lr with seeds 1..`seeds`; returns {name: [records]}."""
    members = [{"optimizer.name": name, "optimizer.learning_rate": lr, "seed": config.seed + s}
               for name, lr in tuned.items() for s in range(1, seeds + 1)]
    records = train(config, members, dataset)
    return {name: records[i * seeds:(i + 1) * seeds] for i, name in enumerate(tuned)}


def _mean_curve(records) -> tuple[list[int], list[float]]:
    """Steps and the mean training loss over `records` (their logging windows coincide)."""
    steps = [s for s, _, _ in records[0].train_history]
    losses = [statistics.fmean(r.train_history[i][1] for r in records) for i in range(len(steps))]
    return steps, losses


def _summary(name, grid_records, winner, runs, lrs) -> dict:
    losses = [r.train_loss for r in runs]
    best = [r.best_val_accuracy for r in runs]
    lr = winner.values["optimizer.learning_rate"]
    first_loss = winner.train_history[0][1] if winner.train_history else math.nan
    row = {"optimizer": name, "tuned_lr": lr, "final_train_loss": statistics.fmean(losses),
           "best_val_acc": statistics.fmean(best), "final_val_acc": statistics.fmean(r.val_accuracy for r in runs),
           "first_window_loss": first_loss, "runs": len(runs),
           "at_grid_edge": lr in (min(lrs), max(lrs)),
           "diverged_lrs": _fmt_lrs([r.values["optimizer.learning_rate"] for r in grid_records if r.diverged]) or "-",
           "lrs_tried": _fmt_lrs(lrs)}
    if len(runs) > 1:
        row["final_train_loss_std"] = statistics.stdev(losses)
        row["best_val_acc_std"] = statistics.stdev(best)
    return row


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes table.csv/md, grid.csv/md and optimizers.png; returns the rows, grids and loss curves."""
    from experiments.configs.optimizers import OPTIMIZERS, get_config

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    grids = {name: tuple(float(lr) for lr in exp.grids[name]) for name in OPTIMIZERS}
    stage1 = tune(config, dataset, grids)
    winners = {name: pick_best(recs) for name, recs in stage1.items()}
    tuned = {name: w.values["optimizer.learning_rate"] for name, w in winners.items()}
    stage2 = confirm(config, dataset, tuned, exp.stage2_seeds) if exp.stage2_seeds > 0 else {}

    runs = {name: [winners[name], *stage2.get(name, [])] for name in grids}
    rows = [_summary(name, stage1[name], winners[name], runs[name], grids[name]) for name in grids]
    grid_rows = [{"optimizer": name, "lr": r.values["optimizer.learning_rate"], "final_train_loss": r.train_loss,
                  "best_val_acc": r.best_val_accuracy, "final_val_acc": r.val_accuracy, "diverged": r.diverged,
                  "tuned": r is winners[name]} for name, recs in stage1.items() for r in recs]
    steps = winners[next(iter(grids))].steps
    title = (f"Optimisers at their tuned lr: LeNet-5, CIFAR-10 ({variant}), {config.num_epochs} epoch(s) "
             f"= {steps} steps of {config.batch_size}, constant lr; {1 + exp.stage2_seeds} seed(s) per row")
    common.write_table(workdir, rows, title=title)
    common.write_table(workdir, grid_rows, name="grid", title=f"Stage 1: every learning rate tried ({variant})")
    curves = {name: _mean_curve(runs[name]) for name in grids}
    plot = _plot(workdir, rows, grid_rows, curves, title=f"LeNet-5, CIFAR-10 {variant}, {steps} steps")
    return {"rows": rows, "grid": grid_rows, "grids": grids, "curves": curves, "steps": steps, "plot": plot}


def _plot(workdir: str, rows, grid_rows, curves, title: str) -> str:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, row in enumerate(rows):
        name, color = row["optimizer"], f"C{i}"
        steps, losses = curves[name]
        left.plot(steps, losses, color=color, label=f"{name} (lr {row['tuned_lr']:g})")
        points = [g for g in grid_rows if g["optimizer"] == name]
        accs = [g["best_val_acc"] if not g["diverged"] else math.nan for g in points]
        right.plot([g["lr"] for g in points], accs, "o-", color=color, label=name)
        right.plot([row["tuned_lr"]], [max(a for a in accs if math.isfinite(a))], "*", color=color, markersize=13)
    left.set_xlabel("step")
    left.set_ylabel("training loss (window mean)")
    left.set_title(f"Training loss at each optimiser's tuned lr\n{title}", fontsize=9)
    left.legend(fontsize=8)
    right.axhline(0.1, color="gray", linestyle=":", linewidth=1, label="chance")
    right.set_xscale("log")
    right.set_xlabel("peak learning rate")
    right.set_ylabel("best validation accuracy")
    right.set_title("Validation accuracy vs learning rate (star: tuned)", fontsize=9)
    right.legend(fontsize=8, ncol=2)
    return common.save_figure(fig, workdir, "optimizers.png")


if __name__ == "__main__":
    common.main(run)
