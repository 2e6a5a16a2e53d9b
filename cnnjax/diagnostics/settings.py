"""The babysitter's thresholds: one dataclass per config block, validated up front.

The numbers themselves live in the config schema (`monitor.*` and `babysit.*` in
`cnnjax.training.config.base_config`), so `--config.monitor.gap=0.05` changes them;
these dataclasses say what each one means and reject impossible values before
anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from cnnjax.training.config import ConfigError


@dataclasses.dataclass(frozen=True)
class MonitorThresholds:
    """When a verdict starts to hold during training (`config.monitor`).

    Attributes:
      every: run the monitored step every this many steps (0: monitors off).
      update_ratio_low: a layer whose ||update|| / ||param|| stays below this
        (median over monitored steps near the peak learning rate) learns too
        slowly; cs231n's rule of thumb is about 1e-3, so one decade either side.
      update_ratio_high: ... above this, the updates are too large for the layer.
      stall_fraction: "loss not decreasing" is judged once this fraction of the
        steps has run (earlier, a warmup can legitimately hold the loss still).
      min_loss_drop: the loss must have fallen by at least this fraction of its
        first logged value by then.
      explode_factor: a logged loss above this multiple of the first one means
        the run diverges: it is stopped early.
      collapse_std: a hidden layer in the deeper half whose activations have a
        standard deviation below this has collapsed towards 0 (init too small).
      saturated_fraction: a tanh/sigmoid layer in the deeper half with more
        than this fraction of activations within 1% of the bounds saturates
        (init too large: gradients vanish through it).
      dead_fraction: a ReLU layer with more than this fraction of units that
        are 0 for every example of a batch has died (cs231n: up to 40% of a
        network can die with a too large learning rate).
      gap: train accuracy minus validation accuracy above this, having grown
        over the last three evaluations, means overfitting.
      histogram_points: activation histograms are recorded at this many points
        of training (the first at step 0).
      histogram_examples: training examples the histograms are computed on.
    """

    every: int
    update_ratio_low: float
    update_ratio_high: float
    stall_fraction: float
    min_loss_drop: float
    explode_factor: float
    collapse_std: float
    saturated_fraction: float
    dead_fraction: float
    gap: float
    histogram_points: int
    histogram_examples: int

    def problems(self) -> list[str]:
        """Human-readable problems with the values (empty when valid)."""
        out = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                out.append("monitor." + message)

        need(self.every >= 0, f"every must be >= 0 (0 turns monitors off), got {self.every}")
        need(0 < self.update_ratio_low < self.update_ratio_high,
             f"update_ratio_low/high must satisfy 0 < low < high, got {self.update_ratio_low}, "
             f"{self.update_ratio_high}")
        need(0 < self.stall_fraction <= 1, f"stall_fraction must be in (0, 1], got {self.stall_fraction}")
        need(0 <= self.min_loss_drop < 1, f"min_loss_drop must be in [0, 1), got {self.min_loss_drop}")
        need(self.explode_factor > 1, f"explode_factor must be > 1, got {self.explode_factor}")
        need(self.collapse_std > 0, f"collapse_std must be > 0, got {self.collapse_std}")
        for key in ("saturated_fraction", "dead_fraction", "gap"):
            value = getattr(self, key)
            need(0 < value < 1, f"{key} must be in (0, 1), got {value}")
        need(self.histogram_points >= 0, f"histogram_points must be >= 0, got {self.histogram_points}")
        need(self.histogram_examples >= 1, f"histogram_examples must be >= 1, got {self.histogram_examples}")
        return out


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    """How the pre-flight checks run and what counts as a pass (`config.babysit`).

    Attributes:
      force: train even though the zero-init symmetry check failed.
      train: after the checks, train the config with monitors on.
      examples: training examples in the batch of the initial-loss,
        regularisation and symmetry checks.
      init_loss_tolerance: the initial loss passes when |loss - ln C| <=
        tolerance * ln C. A well-scaled init gives logits of standard deviation
        s with loss about ln C + s^2 / 2, so 0.25 * ln(10) = 0.58 allows s ~ 1.
      reg_strength: L2 strength the regularisation check turns on when the
        config has neither `loss.l2` nor `optimizer.weight_decay`.
      overfit_examples: size of the tiny training subset to overfit.
      overfit_steps: full-batch steps allowed to reach 100% train accuracy.
      lr_min, lr_max, lr_points: the log-spaced learning rates of the range test.
      lr_steps: steps each learning rate trains for.
      lr_small_drop: a learning rate whose loss fell by less than this fraction
        of the starting loss is "too small".
      lr_explode_factor: one whose loss ever rose above this multiple of the
        starting loss (or went non-finite) is "too large".
      symmetry_tolerance: units of a layer have "identical" gradients when their
        gradient columns differ by at most this fraction of the largest entry.
    """

    force: bool
    train: bool
    examples: int
    init_loss_tolerance: float
    reg_strength: float
    overfit_examples: int
    overfit_steps: int
    lr_min: float
    lr_max: float
    lr_points: int
    lr_steps: int
    lr_small_drop: float
    lr_explode_factor: float
    symmetry_tolerance: float

    def problems(self) -> list[str]:
        """Human-readable problems with the values (empty when valid)."""
        out = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                out.append("babysit." + message)

        need(self.examples >= 2, f"examples must be >= 2, got {self.examples}")
        need(self.init_loss_tolerance > 0, f"init_loss_tolerance must be > 0, got {self.init_loss_tolerance}")
        need(self.reg_strength > 0, f"reg_strength must be > 0, got {self.reg_strength}")
        need(self.overfit_examples >= 1, f"overfit_examples must be >= 1, got {self.overfit_examples}")
        need(self.overfit_steps >= 1, f"overfit_steps must be >= 1, got {self.overfit_steps}")
        need(0 < self.lr_min < self.lr_max, f"lr_min/lr_max must satisfy 0 < min < max, got {self.lr_min}, "
             f"{self.lr_max}")
        need(self.lr_points >= 2, f"lr_points must be >= 2, got {self.lr_points}")
        need(self.lr_steps >= 2, f"lr_steps must be >= 2, got {self.lr_steps}")
        need(0 < self.lr_small_drop < 1, f"lr_small_drop must be in (0, 1), got {self.lr_small_drop}")
        need(self.lr_explode_factor > 1, f"lr_explode_factor must be > 1, got {self.lr_explode_factor}")
        need(self.symmetry_tolerance >= 0, f"symmetry_tolerance must be >= 0, got {self.symmetry_tolerance}")
        return out


def _from_block(cls, block: ml_collections.ConfigDict):
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    values = {}
    for name in fields:
        value = block.get(name)
        if isinstance(value, float) and not math.isfinite(value):
            value = float("nan")  # every comparison fails: reported by `problems`
        values[name] = value
    return cls(**values)


def monitor_thresholds(config: ml_collections.ConfigDict) -> MonitorThresholds:
    """The `monitor` block as a dataclass (not validated; see `validate`)."""
    return _from_block(MonitorThresholds, config.monitor)


def check_settings(config: ml_collections.ConfigDict) -> CheckSettings:
    """The `babysit` block as a dataclass (not validated; see `validate`)."""
    return _from_block(CheckSettings, config.babysit)


def validate(config: ml_collections.ConfigDict) -> tuple[MonitorThresholds, CheckSettings]:
    """Both blocks, or `ConfigError` listing every bad value (before any work)."""
    missing = [block for block in ("monitor", "babysit") if block not in config]
    if missing:
        raise ConfigError(
            f"Invalid config:\n  - missing block(s) {', '.join(missing)}: build the config on "
            "cnnjax.training.config.base_config()"
        )
    thresholds, settings = monitor_thresholds(config), check_settings(config)
    errors = thresholds.problems() + settings.problems()
    if errors:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(errors))
    return thresholds, settings
