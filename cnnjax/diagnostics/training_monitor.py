"""`TrainingMonitor`: the hooks `train_and_evaluate(..., monitor=...)` calls.

It switches the in-step `LayerMonitor` on every `monitor.every` steps, feeds the
logged history to the `VerdictTracker` (stopping the run when the loss
explodes), records activation histograms at a few points of training and keeps
everything the report needs in `history`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.data.splits import stratified_subset
from cnnjax.diagnostics.monitors import LayerMonitor, histograms, make_snapshot_fn, model_activation
from cnnjax.diagnostics.settings import MonitorThresholds
from cnnjax.diagnostics.verdicts import VerdictTracker


@dataclasses.dataclass
class History:
    """What was seen during training, in plain Python (JSON-ready)."""

    train: list[dict[str, float]] = dataclasses.field(default_factory=list)  # step, loss, accuracy, lr
    val: list[dict[str, float]] = dataclasses.field(default_factory=list)  # step, accuracy, loss, gap
    monitored: list[dict[str, float]] = dataclasses.field(default_factory=list)  # step + monitor/*
    histograms: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # step + per-layer


class TrainingMonitor:
    """Monitors, verdicts and history for one run.

    Args:
      config: the run's config (reads `monitor.*`, the learning rate, the model).
      dataset: the loaded dataset (histograms use its first training images).
      model: the run's model (its `activation` decides dead vs saturated units).
      thresholds: validated `monitor.*` thresholds; `every` 0 means every
        `log_every_steps`.
      emit: where verdict lines go (default: print).
    """

    def __init__(self, config: ml_collections.ConfigDict, dataset, model, thresholds: MonitorThresholds,
                 emit=None):
        self.every = thresholds.every or config.log_every_steps
        self.thresholds = thresholds
        self.step_monitor = LayerMonitor(activation=model_activation(model))
        self.peak_learning_rate = float(config.optimizer.learning_rate)
        self.emit = emit
        self.history = History()
        self.tracker: VerdictTracker | None = None
        rows = stratified_subset(dataset.train.labels, min(thresholds.histogram_examples, dataset.train.num_examples))
        self._images = pipeline.normalize(
            jnp.asarray(dataset.train.images[rows]), jnp.asarray(dataset.mean), jnp.asarray(dataset.std))
        self._snapshot = make_snapshot_fn(self.step_monitor)
        self._histogram_steps: list[int] = []

    @property
    def verdicts(self):
        return self.tracker.verdicts if self.tracker else []

    # -- hooks called by train_and_evaluate ----------------------------------------
    def start(self, state, total_steps: int) -> None:
        self.tracker = VerdictTracker(self.thresholds, total_steps, self.peak_learning_rate, emit=self.emit)
        points = self.thresholds.histogram_points
        start = int(state.step)
        if points == 1:
            self._histogram_steps = [start]
        elif points > 1:
            self._histogram_steps = sorted({start + round(i * (total_steps - start) / (points - 1))
                                            for i in range(points)})
        self._maybe_snapshot(start, state)

    def log(self, step: int, state, means: dict[str, float], monitored: list[tuple[int, dict]]) -> str | None:
        """A logging interval ended at `step`; returns a reason to stop, or None."""
        lr = float(means.get("train/learning_rate", self.peak_learning_rate))
        loss, accuracy = float(means["train/loss"]), float(means["train/accuracy"])
        self.history.train.append({"step": step, "loss": loss, "accuracy": accuracy, "learning_rate": lr})
        self.tracker.observe_train(step, loss, accuracy, lr)
        for monitored_step, record in monitored:
            values = {k: float(v) for k, v in record.items()}
            self.history.monitored.append({"step": monitored_step, **values})
            self.tracker.observe_monitored(monitored_step, values, lr)
        self._maybe_snapshot(step, state)
        return self.tracker.stop_reason()

    def evaluate(self, step: int, val: dict[str, float]) -> dict[str, float]:
        gap = self.tracker.observe_eval(step, float(val["accuracy"]))
        row = {"step": step, "accuracy": float(val["accuracy"]), "loss": float(val["loss"])}
        if gap is not None:
            row["gap"] = gap
        self.history.val.append(row)
        return {"monitor/train_val_gap": gap} if gap is not None else {}

    def finish(self, summary: dict[str, Any]) -> None:
        """Adds the final validation point and the verdicts to the run's summary."""
        if "val/accuracy" in summary:
            summary.update(self.evaluate(int(summary["steps"]),
                                         {"accuracy": summary["val/accuracy"], "loss": summary["val/loss"]}))
        summary["verdicts"] = [v.line() for v in self.verdicts]

    # -- histograms -------------------------------------------------------------
    def _maybe_snapshot(self, step: int, state) -> None:
        if not self._histogram_steps or step < self._histogram_steps[0]:
            return
        while self._histogram_steps and step >= self._histogram_steps[0]:
            self._histogram_steps.pop(0)
        key = jax.random.PRNGKey(0)
        activations = jax.device_get(self._snapshot(state, self._images, key))
        finite = all(np.all(np.isfinite(v)) for v in activations.values())
        self.history.histograms.append({"step": step, "finite": finite, "layers": histograms(activations)})
