"""Constant, step, exponential and cosine learning-rate schedules, each with and without linear warmup.

    python -m experiments.lr_schedules --workdir=/tmp/exp/lr_schedules [--variant=smoke|full]

Same model (LeNet-5), data (CIFAR-10), optimiser (SGD + momentum 0.9), peak
learning rate and budget for all 8 runs; only lr(t) differs (definitions in
`experiments/configs/lr_schedules.py`). The runs train as one population
(`experiments/mixed_population.py`), so the 8 schedules cost one compile.
Writes `table.csv/md` (one row per schedule and warmup), `metrics.jsonl`
(member curves, with the learning rate the step applied) and
`lr_schedules.png` (the schedules lr(t) themselves; training loss vs step).
"""

from __future__ import annotations

import math
import os
import statistics

from experiments import common


def schedule_members(schedules, warmup_epochs: float, seeds: int, base_seed: int = 0) -> list[dict]:
    """Members: every schedule without and with warmup (in that order), each with `seeds` seeds."""
    return [{"schedule.name": name, "schedule.warmup_epochs": warm, "seed": base_seed + s}
            for name in schedules for warm in (0.0, float(warmup_epochs)) for s in range(seeds)]


def lr_curves(config, members, steps_per_epoch: int, total_steps: int) -> dict[tuple[str, float], list[float]]:
    """{(schedule, warmup epochs): lr at steps 0..total_steps-1}, from the library's `make_lr_scale`."""
    from cnnjax.tuning.population import member_config
    from experiments.mixed_population import schedule_key, schedule_table

    runs = list(dict.fromkeys((m["schedule.name"], m["schedule.warmup_epochs"]) for m in members))
    keys = [schedule_key(member_config(config, {"schedule.name": n, "schedule.warmup_epochs": w})) for n, w in runs]
    table = schedule_table(keys, steps_per_epoch, total_steps)
    peak = float(config.optimizer.learning_rate)
    return {run: [peak * float(v) for v in row] for run, row in zip(runs, table)}


def _row(name, warmup, records, lr_curve) -> dict:
    losses = [r.train_loss for r in records]
    best = [r.best_val_accuracy for r in records]
    row = {"schedule": name, "warmup_epochs": warmup, "final_train_loss": statistics.fmean(losses),
           "best_val_acc": statistics.fmean(best), "final_val_acc": statistics.fmean(r.val_accuracy for r in records),
           "final_lr": lr_curve[-1], "mean_lr": statistics.fmean(lr_curve), "seeds": len(records),
           "diverged": sum(r.diverged for r in records)}
    if len(records) > 1:
        row["final_train_loss_std"] = statistics.stdev(losses)
        row["best_val_acc_std"] = statistics.stdev(best)
    return row


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes table.csv/md, metrics.jsonl and lr_schedules.png; returns rows, lr curves, loss curves, records."""
    from experiments.configs.lr_schedules import SCHEDULES, get_config
    from experiments.mixed_population import train_mixed

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    members = schedule_members(SCHEDULES, exp.warmup_epochs, exp.seeds, config.seed)
    os.makedirs(workdir, exist_ok=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)  # the writer appends
    records = train_mixed(config, members, dataset=dataset, plan=config.sweep.plan, workdir=workdir)

    steps_per_epoch = dataset.train.num_examples // config.batch_size
    total_steps = steps_per_epoch * config.num_epochs
    lrs = lr_curves(config, members, steps_per_epoch, total_steps)
    by_run: dict[tuple[str, float], list] = {}
    for m, r in zip(members, records):
        by_run.setdefault((m["schedule.name"], m["schedule.warmup_epochs"]), []).append(r)
    rows = [_row(name, warm, recs, lrs[(name, warm)]) for (name, warm), recs in by_run.items()]
    title = (f"LR schedules: LeNet-5, CIFAR-10 ({variant}), momentum 0.9, peak lr {config.optimizer.learning_rate:g}, "
             f"{config.num_epochs} epochs = {total_steps} steps of {config.batch_size}, {exp.seeds} seed(s) per row")
    common.write_table(workdir, rows, title=title)
    losses = {run: _mean_curve(recs) for run, recs in by_run.items()}
    plot = _plot(workdir, lrs, losses, steps_per_epoch, f"LeNet-5, CIFAR-10 {variant}")
    return {"rows": rows, "lr": lrs, "loss": losses, "members": members, "records": records,
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "config": config, "plot": plot}


def _mean_curve(records) -> tuple[list[int], list[float]]:
    steps = [s for s, _, _ in records[0].train_history]
    return steps, [statistics.fmean(r.train_history[i][1] for r in records) for i in range(len(steps))]


def _plot(workdir: str, lrs, losses, steps_per_epoch: int, title: str) -> str:
    plt = common.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(dict.fromkeys(name for name, _ in lrs))
    for (name, warm), curve in lrs.items():
        color, style = f"C{names.index(name)}", "--" if warm else "-"
        label = f"{name}" + (f" + {warm:g} ep warmup" if warm else "")
        left.plot(range(len(curve)), curve, style, color=color, label=label)
        steps, loss = losses[(name, warm)]
        right.plot(steps, loss, style, color=color, label=label)
    for ax in (left, right):
        ax.set_xlabel(f"step ({steps_per_epoch} per epoch)")
        ax.legend(fontsize=7)
    left.set_ylabel("learning rate")
    left.set_title(f"The schedules (solid: no warmup; dashed: linear warmup)\n{title}", fontsize=9)
    right.set_ylabel("training loss (window mean)")
    right.set_title("Training loss", fontsize=9)
    finite = [v for _, loss in losses.values() for v in loss if math.isfinite(v)]
    if finite:
        right.set_ylim(min(finite) - 0.05, min(max(finite), 2.6) + 0.05)
    return common.save_figure(fig, workdir, "lr_schedules.png")


if __name__ == "__main__":
    common.main(run)
