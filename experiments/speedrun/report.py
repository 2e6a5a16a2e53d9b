"""The speed run's reporting: the device's name, time to target, the accuracy-vs-time plot."""

from __future__ import annotations

import os
import platform

import numpy as np

from experiments import common


def device_name() -> str:
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.platform}: {device.device_kind}"
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {platform.machine()} CPU" + (f" ({model})" if model else "")


def time_to_target(rows: list[dict], target: float) -> float | None:
    """Clock at the first evaluation at or above `target` (None if none reached it)."""
    return next((row["clock_s"] for row in rows if row["val_accuracy"] >= target), None)


def median_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.median(values))


def plot(workdir: str, rows: list[dict], records: list[dict], config, compile_s: float) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for record in records:
        points = [r for r in rows if r["run"] == record["run"]]
        times = [r["clock_s"] for r in points]
        accuracy = [r["val_accuracy"] for r in points]
        label = "excluding compile" if record["run"] == 0 else None
        ax.plot(times, accuracy, "o-", color="C0", alpha=0.8, label=label)
        ax.plot([t + compile_s for t in times], accuracy, "s--", color="C1", alpha=0.6,
                label="including compile" if record["run"] == 0 else None)
        ax.plot(times[-1:], accuracy[-1:], "*", color="C3", markersize=12,
                label=f"final, TTA level {config.eval.tta_level}" if record["run"] == 0 else None)
    ax.axhline(config.target_accuracy, color="gray", linestyle=":", label=f"target {config.target_accuracy:.0%}")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"CIFAR-10 speed run ({config.variant}, {config.precision}): {device_name()}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    common.save_figure(fig, workdir, "val_accuracy_vs_time")
