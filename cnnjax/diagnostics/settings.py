"""The babysitter's thresholds: the `monitor` and `babysit` config blocks, validated up front.

One dataclass per block says what each key means and holds its default;
`monitor_defaults` / `babysit_defaults` turn them into the blocks of the schema
(`cnnjax.config.base_config`), so `--config.monitor.gap=0.05` changes them.
`settings_problems` rejects impossible values, called by the schema's
`cnnjax.config.validate_config` before anything is compiled or written.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from cnnjax.training.config import raise_problems


@dataclasses.dataclass(frozen=True)
class MonitorThresholds:
    """When a verdict starts to hold during training (`config.monitor`).

    Attributes:
      every: run the monitored step every this many steps (0: monitors off;
        under `--mode=babysit`, every `log_every_steps`).
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

    every: int = 0
    update_ratio_low: float = 1e-4
    update_ratio_high: float = 1e-2
    stall_fraction: float = 0.1
    min_loss_drop: float = 0.05
    explode_factor: float = 3.0
    collapse_std: float = 0.02
    saturated_fraction: float = 0.5
    dead_fraction: float = 0.4
    gap: float = 0.1
    histogram_points: int = 4
    histogram_examples: int = 256

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

    force: bool = False
    train: bool = True
    examples: int = 256
    init_loss_tolerance: float = 0.25
    reg_strength: float = 1e-3
    overfit_examples: int = 20
    overfit_steps: int = 200
    lr_min: float = 1e-5
    lr_max: float = 10.0
    lr_points: int = 7
    lr_steps: int = 50
    lr_small_drop: float = 0.1
    lr_explode_factor: float = 1.5
    symmetry_tolerance: float = 1e-6

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


def _block(cls) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dataclasses.asdict(cls()))


def monitor_defaults() -> ml_collections.ConfigDict:
    """The schema's `monitor` block: `MonitorThresholds`' defaults."""
    return _block(MonitorThresholds)


def babysit_defaults() -> ml_collections.ConfigDict:
    """The schema's `babysit` block: `CheckSettings`' defaults."""
    return _block(CheckSettings)


def monitor_thresholds(config: ml_collections.ConfigDict) -> MonitorThresholds:
    """The `monitor` block as a dataclass (not validated; see `validate`)."""
    return _from_block(MonitorThresholds, config.monitor)


def check_settings(config: ml_collections.ConfigDict) -> CheckSettings:
    """The `babysit` block as a dataclass (not validated; see `validate`)."""
    return _from_block(CheckSettings, config.babysit)


def settings_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the `monitor` and `babysit` blocks (empty when valid)."""
    missing = [block for block in ("monitor", "babysit") if block not in config]
    if missing:
        return [f"missing block(s) {', '.join(missing)}: build the config on cnnjax.config.base_config()"]
    return monitor_thresholds(config).problems() + check_settings(config).problems()


def validate(config: ml_collections.ConfigDict) -> tuple[MonitorThresholds, CheckSettings]:
    """Both blocks, or `ConfigError` listing every bad value (before any work)."""
    raise_problems(settings_problems(config))
    return monitor_thresholds(config), check_settings(config)
