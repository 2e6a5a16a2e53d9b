"""Verdicts during training: host-side rules over the logged history.

Each verdict is reported once, at the step where it starts to hold, and kept in
the order found. The rules and their thresholds are those of
`cnnjax.diagnostics.settings.MonitorThresholds`; the tracker only reads numbers,
so it is tested on synthetic histories without training anything.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from cnnjax.diagnostics.settings import MonitorThresholds

# Monitored records whose learning rate is at least this fraction of the peak
# judge the update ratio: warmup and the tail of a decaying schedule make small
# updates on purpose.
NEAR_PEAK_LR = 0.5
# Update ratios are judged on the median of this many recent monitored steps.
RATIO_WINDOW = 5
# The train/val gap must have grown over this many consecutive evaluations.
GAP_EVALS = 3


@dataclasses.dataclass
class Verdict:
    """A problem seen during training, with the figure that shows it."""

    key: str  # stable id, e.g. "update_ratio/Conv_0"
    title: str
    step: int
    measured: str
    expected: str
    advice: str
    stop: bool = False

    def line(self) -> str:
        return f"[step {self.step}] {self.title}: {self.measured} (expected {self.expected}). {self.advice}"


def _layer_values(record: dict[str, float], quantity: str) -> list[tuple[str, float]]:
    prefix = f"monitor/{quantity}/"
    return [(k[len(prefix):], float(v)) for k, v in record.items() if k.startswith(prefix)]


def deep_layers(names: list[str]) -> list[str]:
    """The deeper half of the hidden layers (execution order), at least the last one."""
    return names[len(names) // 2:] if names else []


class VerdictTracker:
    """Applies the rules to each new piece of history; remembers what it found.

    Args:
      thresholds: the `monitor.*` thresholds.
      total_steps: steps the run will take (for `stall_fraction`).
      peak_learning_rate: the configured peak learning rate.
      emit: called with each new verdict's line (default: print).
    """

    def __init__(self, thresholds: MonitorThresholds, total_steps: int, peak_learning_rate: float,
                 emit: Callable[[str], Any] | None = None):
        self.thresholds = thresholds
        self.total_steps = total_steps
        self.peak_learning_rate = peak_learning_rate
        self.emit = emit if emit is not None else (lambda line: print("Verdict " + line, flush=True))
        self.verdicts: list[Verdict] = []
        self.first_loss: float | None = None
        self.first_loss_step: int | None = None
        self.train_accuracy: float | None = None
        self.ratio_history: list[dict[str, float]] = []
        self.gaps: list[float] = []

    @property
    def keys(self) -> set[str]:
        return {v.key for v in self.verdicts}

    def add(self, verdict: Verdict) -> Verdict | None:
        if verdict.key in self.keys:
            return None
        self.verdicts.append(verdict)
        self.emit(verdict.line())
        return verdict

    def stop_reason(self) -> str | None:
        """Why training should stop now (a verdict with `stop`), or None."""
        for verdict in self.verdicts:
            if verdict.stop:
                return f"{verdict.title}: {verdict.measured}. {verdict.advice}"
        return None

    # -- training log ------------------------------------------------------------
    def observe_train(self, step: int, loss: float, accuracy: float, learning_rate: float) -> None:
        """A logged interval: mean loss / accuracy / learning rate up to `step`."""
        t = self.thresholds
        self.train_accuracy = accuracy
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss, self.first_loss_step = loss, step
        first = self.first_loss
        # The stall rule compares two logged intervals, never the first with itself.
        later = self.first_loss_step is not None and step > self.first_loss_step
        if not math.isfinite(loss) or (first is not None and loss > t.explode_factor * first):
            self.add(Verdict(
                "loss_exploding", "loss exploding", step,
                f"loss {loss:.4g}" + (f" vs {first:.4g} at the start" if first is not None else ""),
                f"below {t.explode_factor:g} x the first logged loss",
                "The learning rate is too large: lower optimizer.learning_rate (try 1/10), add "
                "schedule.warmup_epochs or optimizer.grad_clip_norm. Training was stopped early.",
                stop=True,
            ))
        elif later and step >= t.stall_fraction * self.total_steps and loss > (1 - t.min_loss_drop) * first:
            self.add(Verdict(
                "loss_not_decreasing", "loss not decreasing", step,
                f"loss {loss:.4g} after {step} steps vs {first:.4g} at the start",
                f"a drop of at least {t.min_loss_drop:.0%} by {t.stall_fraction:.0%} of training",
                "The learning rate is probably too small (raise it by 10x), or the init is poor "
                "(see the activation verdicts).",
            ))

    def observe_monitored(self, step: int, record: dict[str, float], learning_rate: float) -> None:
        """One monitored step's `monitor/*` metrics."""
        t = self.thresholds
        near_peak = learning_rate >= NEAR_PEAK_LR * self.peak_learning_rate
        if near_peak:
            self.ratio_history.append(dict(_layer_values(record, "update_ratio")))
            recent = self.ratio_history[-RATIO_WINDOW:]
            if len(recent) >= min(RATIO_WINDOW, 3):
                for layer in recent[-1]:
                    ratio = float(np.median([r[layer] for r in recent if layer in r]))
                    if not t.update_ratio_low <= ratio <= t.update_ratio_high:
                        direction = "small" if ratio < t.update_ratio_low else "large"
                        self.add(Verdict(
                            f"update_ratio/{layer}", f"update/parameter ratio too {direction} in {layer}", step,
                            f"median ratio {ratio:.2e} over the last {len(recent)} monitored steps",
                            f"about 1e-3 (between {t.update_ratio_low:.0e} and {t.update_ratio_high:.0e})",
                            ("Raise" if direction == "small" else "Lower")
                            + " the learning rate (or this layer's init scale is off).",
                        ))
        stds = _layer_values(record, "act_std")
        deep = set(deep_layers([name for name, _ in stds]))
        collapsed = [(n, v) for n, v in stds if n in deep and v < t.collapse_std]
        if collapsed:
            name, value = collapsed[-1]
            self.add(Verdict(
                "activations_collapsing", "activations collapsing to 0", step,
                f"std {value:.2e} in {name}" + (f" ({len(collapsed)} deep layers)" if len(collapsed) > 1 else ""),
                f"std >= {t.collapse_std:g} in the deeper layers",
                "The init scale is too small: activations (and their gradients) shrink layer by layer. "
                "Use xavier/he init (model.kernel_init) or a larger model.init_scale, or add BatchNorm.",
            ))
        saturated = [(n, v) for n, v in _layer_values(record, "saturated_fraction")
                     if n in deep and v > t.saturated_fraction]
        if saturated:
            name, value = saturated[-1]
            self.add(Verdict(
                "activations_saturating", "activations saturating", step,
                f"{value:.0%} of activations at the bounds in {name}",
                f"at most {t.saturated_fraction:.0%}",
                "The init scale is too large: units sit where the nonlinearity is flat and gradients vanish. "
                "Use xavier init (model.kernel_init) or a smaller model.init_scale.",
            ))
        dead = [(n, v) for n, v in _layer_values(record, "dead_fraction") if v > t.dead_fraction]
        if dead:
            name, value = max(dead, key=lambda item: item[1])
            self.add(Verdict(
                "dead_relus", "many dead ReLUs", step,
                f"{value:.0%} of the units of {name} are 0 for the whole batch",
                f"at most {t.dead_fraction:.0%}",
                "Lower the learning rate (a large update can kill units for good), or use he init / leaky_relu.",
            ))

    # -- evaluation --------------------------------------------------------------
    def observe_eval(self, step: int, val_accuracy: float) -> float | None:
        """A validation evaluation; returns the train - val accuracy gap."""
        if self.train_accuracy is None:
            return None
        gap = self.train_accuracy - val_accuracy
        self.gaps.append(gap)
        t = self.thresholds
        recent = self.gaps[-(GAP_EVALS + 1):]
        growing = len(recent) == GAP_EVALS + 1 and all(b > a for a, b in zip(recent, recent[1:]))
        if gap > t.gap and growing:
            self.add(Verdict(
                "overfitting", "train/val gap growing (overfitting)", step,
                f"train accuracy - val accuracy = {gap:.3f}, grown over the last {GAP_EVALS} evaluations",
                f"a gap below {t.gap:g}",
                "Raise regularisation (loss.l2 / optimizer.weight_decay, model.dropout_rate, data augmentation) "
                "or get more data.",
            ))
        return gap
