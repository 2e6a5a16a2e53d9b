"""The babysitting report: PNGs (matplotlib, Agg), `report.md`, and `report.html`.

`report.html` embeds the PNGs as base64, so the one file is viewable offline;
`report.md` links the PNGs next to it.
"""

from __future__ import annotations

import base64
import html
import math
import os
from typing import Any

import numpy as np

from cnnjax.training import files
from cnnjax.training.files import atomic_write
from cnnjax.training.writers import save_figure

MAX_LAYERS_IN_HISTOGRAMS = 8


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    return plt


def _finite(values) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return np.where(np.isfinite(array), array, np.nan)


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in records if key in r]
    return np.asarray([r["step"] for r in rows]), _finite([r[key] for r in rows])


def _layers(records: list[dict], quantity: str) -> list[str]:
    prefix = f"monitor/{quantity}/"
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            if key.startswith(prefix):
                seen.setdefault(key[len(prefix):])
    return list(seen)


def _save(fig, workdir: str, name: str) -> str:
    fig.tight_layout()
    save_figure(fig, os.path.join(workdir, name), dpi=90)
    _pyplot().close(fig)
    return name


def plot_training(workdir: str, history: dict[str, list], thresholds: dict[str, Any]) -> list[tuple[str, str]]:
    """Loss, accuracy, update-ratio and activation-statistics figures; (file, caption) pairs."""
    plt = _pyplot()
    figures = []
    train, val, monitored = history["train"], history["val"], history["monitored"]
    if train:
        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        steps, loss = _series(train, "loss")
        ax.plot(steps, loss, label="train loss (mean per logging interval)")
        if np.nanmin(loss) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend()
        figures.append((_save(fig, workdir, "loss.png"), "Training loss"))

        fig, ax = plt.subplots(figsize=(6.5, 3.4))
        ax.plot(*_series(train, "accuracy"), label="train accuracy")
        if val:
            ax.plot(*_series(val, "accuracy"), "o-", label="validation accuracy")
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
        figures.append((_save(fig, workdir, "accuracy.png"), "Train and validation accuracy"))

    layers = _layers(monitored, "update_ratio")
    if layers:
        fig, ax = plt.subplots(figsize=(6.5, 3.6))
        for layer in layers:
            ax.plot(*_series(monitored, f"monitor/update_ratio/{layer}"), label=layer)
        ax.axhspan(thresholds["update_ratio_low"], thresholds["update_ratio_high"], color="green", alpha=0.08)
        ax.axhline(1e-3, color="green", linestyle="--", linewidth=1, label="1e-3")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("||update|| / ||param||")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        figures.append((_save(fig, workdir, "update_ratio.png"),
                        "Per-layer update/parameter norm ratio (shaded: the healthy band)"))

    act_layers = _layers(monitored, "act_std")
    if act_layers:
        fraction = "dead_fraction" if _layers(monitored, "dead_fraction") else "saturated_fraction"
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.4))
        for layer in act_layers:
            axes[0].plot(*_series(monitored, f"monitor/act_std/{layer}"), label=layer)
            if _layers(monitored, fraction):
                axes[1].plot(*_series(monitored, f"monitor/{fraction}/{layer}"), label=layer)
        axes[0].set_yscale("log")
        axes[0].axhline(thresholds["collapse_std"], color="red", linestyle="--", linewidth=1)
        axes[0].set_ylabel("activation std")
        axes[1].set_ylabel(fraction.replace("_", " "))
        axes[1].axhline(thresholds[fraction], color="red", linestyle="--", linewidth=1)
        for ax in axes:
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        figures.append((_save(fig, workdir, "activation_stats.png"),
                        f"Activation std and {fraction.replace('_', ' ')} per hidden layer (red: verdict threshold)"))
    return figures


def plot_histograms(workdir: str, snapshots: list[dict]) -> list[tuple[str, str]]:
    """One row per hidden layer, one column per point of training."""
    snapshots = [s for s in snapshots if s["layers"]]
    if not snapshots:
        return []
    plt = _pyplot()
    layers = list(snapshots[0]["layers"])[:MAX_LAYERS_IN_HISTOGRAMS]
    fig, axes = plt.subplots(len(layers), len(snapshots), figsize=(2.3 * len(snapshots) + 0.5, 1.5 * len(layers) + 0.6),
                             squeeze=False)
    for col, snapshot in enumerate(snapshots):
        for row, layer in enumerate(layers):
            ax = axes[row][col]
            hist = snapshot["layers"].get(layer)
            if hist:
                edges = np.asarray(hist["edges"])
                ax.bar(edges[:-1], hist["fractions"], width=np.diff(edges), align="edge", color="tab:blue")
                ax.set_title(f"std {hist['std']:.2g}", fontsize=7, pad=2)
            ax.tick_params(labelsize=6)
            if col == 0:
                ax.set_ylabel(layer, fontsize=7)
            if row == 0:
                ax.annotate(f"step {snapshot['step']}", (0.5, 1.25), xycoords="axes fraction", ha="center",
                            fontsize=8, fontweight="bold")
    return [(_save(fig, workdir, "activation_histograms.png"),
             "Activation histograms per hidden layer (rows) at points of training (columns)")]


def plot_lr_range(workdir: str, check: dict) -> list[tuple[str, str]]:
    details = check.get("details", {})
    if not details.get("losses"):
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for lr, label, losses in zip(details["learning_rates"], details["classes"], details["losses"]):
        values = _finite(losses)
        values = np.where(values > 1e3, np.nan, values)  # exploded members would flatten the others
        ax.plot(values, label=f"lr {lr:g}: {label.split(':')[0]}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return [(_save(fig, workdir, "lr_range.png"), "Learning-rate range: one population, one curve per rate")]


def _markdown(result: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    lines = [f"# Babysitting report: {result['model']} on {result['dataset']}", "", "## Pre-flight checks", "",
             "| check | result | measured | expected | what to do |", "| --- | --- | --- | --- | --- |"]
    for c in result["checks"]:
        cells = [c["name"], c["status"].upper(), c["measured"], c["expected"], c["advice"]]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    training = result.get("training")
    lines += ["", "## Training", ""]
    if training:
        lines.append(", ".join(f"{k}: {_fmt(v)}" for k, v in training.items() if k != "error"))
    else:
        lines.append("Not run (checks only).")
    lines += ["", "## Verdicts", ""]
    verdicts = result.get("verdicts") or []
    lines += [f"- **{v['title']}** (from step {v['step']}): {v['measured']}; expected {v['expected']}. "
              f"{v['advice']}" for v in verdicts] or ["None held during training."]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})\n\n*{caption}*\n" for name, caption in figures]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _html(markdown_text: str, result: dict[str, Any], figures: list[tuple[str, str]], workdir: str) -> str:
    esc = html.escape
    parts = [f"<h1>Babysitting report: {esc(result['model'])} on {esc(result['dataset'])}</h1>",
             "<h2>Pre-flight checks</h2><table><tr><th>check</th><th>result</th><th>measured</th>"
             "<th>expected</th><th>what to do</th></tr>"]
    for c in result["checks"]:
        parts.append(f"<tr class='{esc(c['status'])}'><td>{esc(c['name'])}</td><td>{esc(c['status'].upper())}</td>"
                     f"<td>{esc(c['measured'])}</td><td>{esc(c['expected'])}</td><td>{esc(c['advice'])}</td></tr>")
    parts.append("</table><h2>Training</h2>")
    training = result.get("training")
    parts.append("<p>" + (esc(", ".join(f"{k}: {_fmt(v)}" for k, v in training.items() if k != "error"))
                          if training else "Not run (checks only).") + "</p><h2>Verdicts</h2>")
    verdicts = result.get("verdicts") or []
    parts.append("<ul>" + "".join(f"<li><b>{esc(v['title'])}</b> (from step {v['step']}): {esc(v['measured'])}; "
                                  f"expected {esc(v['expected'])}. {esc(v['advice'])}</li>" for v in verdicts)
                 + "</ul>" if verdicts else "<p>None held during training.</p>")
    parts.append("<h2>Figures</h2>")
    for name, caption in figures:
        data = base64.b64encode(files.read_bytes(os.path.join(workdir, name))).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 6px;font-size:90%;vertical-align:top}"
             "tr.pass td:nth-child(2){color:#070}tr.fail td:nth-child(2){color:#b00;font-weight:bold}"
             "img{max-width:100%}figcaption{font-style:italic;margin-bottom:1.5em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Babysitting report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(workdir: str, result: dict[str, Any], monitor=None) -> dict[str, Any]:
    """Writes the PNGs, `report.md` and `report.html` into `workdir`; returns their names."""
    figures: list[tuple[str, str]] = []
    lr_check = next((c for c in result["checks"] if c["name"] == "learning-rate range"), None)
    if monitor is not None:
        history = {"train": monitor.history.train, "val": monitor.history.val, "monitored": monitor.history.monitored}
        figures += plot_training(workdir, history, vars(monitor.thresholds))
        figures += plot_histograms(workdir, monitor.history.histograms)
    if lr_check:
        figures += plot_lr_range(workdir, lr_check)
    text = _markdown(result, figures)
    with atomic_write(os.path.join(workdir, "report.md")) as f:
        f.write(text)
    with atomic_write(os.path.join(workdir, "report.html")) as f:
        f.write(_html(text, result, figures, workdir))
    return {"markdown": "report.md", "html": "report.html", "figures": [name for name, _ in figures]}
