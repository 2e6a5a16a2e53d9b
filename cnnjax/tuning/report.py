"""Sweep outputs: results.csv / results.json and PNG plots."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from typing import Any

from cnnjax.training.files import atomic_write
from cnnjax.training.writers import read_metrics, save_figure, write_json


def write_results(workdir: str, rows: list[dict[str, Any]]) -> None:
    """One row per member: hyperparameters, best/final val accuracy, train figures, diverged, steps."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    with atomic_write(os.path.join(workdir, "results.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
    write_json(os.path.join(workdir, "results.json"), {"members": rows})


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def write_plots(workdir: str, rows: list[dict[str, Any]], space: dict[str, Any]) -> list[str]:
    """Val accuracy vs each numeric hyperparameter, (lr, wd) scatter, all loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    numeric = [p for p, d in space.items() if d.kind != "choice"]
    ok = [r for r in rows if not r["diverged"] and _finite(r["best_val_accuracy"])]
    bad = [r for r in rows if r["diverged"]]
    if numeric:
        fig, axes = plt.subplots(1, len(numeric), figsize=(4.5 * len(numeric), 3.6), squeeze=False)
        for ax, path in zip(axes[0], numeric):
            ax.scatter([r[path] for r in ok], [r["best_val_accuracy"] for r in ok], s=18, label="trained")
            if bad:
                ax.scatter([r[path] for r in bad], [0.0] * len(bad), marker="x", color="red", label="diverged")
            if space[path].kind == "loguniform":
                ax.set_xscale("log")
            elif space[path].kind == "one_minus_loguniform":
                ax.set_xscale("function", functions=(lambda v: -_log1m(v), lambda w: 1 - 10 ** (-w)))
            ax.set_xlabel(path)
            ax.set_ylabel("best val accuracy")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(workdir, "val_accuracy_vs_hparams.png")
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(os.path.basename(path))
    if "optimizer.learning_rate" in space and "optimizer.weight_decay" in space:
        fig, ax = plt.subplots(figsize=(5.2, 4.2))
        sc = ax.scatter([r["optimizer.learning_rate"] for r in ok], [r["optimizer.weight_decay"] for r in ok],
                        c=[r["best_val_accuracy"] for r in ok], cmap="viridis", s=30)
        if bad:
            ax.scatter([r["optimizer.learning_rate"] for r in bad], [r["optimizer.weight_decay"] for r in bad],
                       marker="x", color="red", label="diverged")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        if space["optimizer.weight_decay"].kind == "loguniform":
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("weight decay")
        fig.colorbar(sc, label="best val accuracy")
        fig.tight_layout()
        path = os.path.join(workdir, "lr_wd_scatter.png")
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(os.path.basename(path))
    curves = defaultdict(list)
    for rec in read_metrics(workdir):
        if "member" in rec and _finite(rec.get("train/loss")):
            curves[rec["member"]].append((rec["step"], rec["train/loss"]))
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        diverged = {r["member"] for r in bad}
        for member, points in sorted(curves.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], lw=1,
                    color="red" if member in diverged else None, alpha=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss")
        ax.set_title(f"{len(curves)} members (red: diverged)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(workdir, "loss_curves.png")
        save_figure(fig, path, dpi=110)
        plt.close(fig)
        written.append(os.path.basename(path))
    return written


def _log1m(v):
    import numpy as np

    return np.log10(np.clip(1 - np.asarray(v, float), 1e-12, None))
