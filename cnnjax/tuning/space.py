"""Search spaces: distributions over config keys, and the samplers that draw them.

A space maps config paths to distribution specs, e.g.::

    optimizer.learning_rate: "loguniform(1e-3, 1)"
    optimizer.momentum:      "one_minus_loguniform(0.8, 0.999)"   # 1-beta log-uniform
    loss.label_smoothing:    "uniform(0, 0.2)"
    model.name:              "choice('lenet5', 'resnet20_cifar')"  # static: splits groups

Each distribution maps a unit number u in [0, 1) to a value, so every sampler
(grid, random, quasi-random) only has to produce points of the unit cube.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
from typing import Any, Sequence

import numpy as np

from cnnjax.training.optim import OPTIMIZER_HPARAMS, OWN_HPARAM_KEYS, takes_hyperparameter

SAMPLER_CHOICES = ("random", "grid", "quasi_random")
DISTRIBUTION_CHOICES = ("uniform", "loguniform", "one_minus_loguniform", "int", "choice")

# Hyperparameters a population carries per member as traced values; changing them
# never recompiles. Anything else in a space changes shapes or code and splits the
# sweep into groups, each its own population.
TRACED_PATHS = (
    "optimizer.learning_rate",
    "optimizer.weight_decay",
    "optimizer.ema_decay",
    *(f"optimizer.{k}" for k in OWN_HPARAM_KEYS),
    "loss.l2",
    "loss.l1",
    "loss.label_smoothing",
    "model.dropout_rate",
    "model.init_scale",
    "seed",
    "data_seed",
)


class SpaceError(ValueError):
    """A search space that cannot be sampled; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Distribution:
    """One dimension of a space."""

    kind: str
    args: tuple[Any, ...]

    @property
    def low(self) -> float:
        return float(self.args[0])

    @property
    def high(self) -> float:
        return float(self.args[1])

    @property
    def is_log(self) -> bool:
        return self.kind in ("loguniform", "one_minus_loguniform")

    def _to_warped(self, value: float) -> float:
        if self.kind == "loguniform":
            return math.log(value)
        if self.kind == "one_minus_loguniform":
            return -math.log(1.0 - value)
        return float(value)

    def _from_warped(self, warped: float) -> float:
        if self.kind == "loguniform":
            return math.exp(warped)
        if self.kind == "one_minus_loguniform":
            return 1.0 - math.exp(-warped)
        return warped

    def value(self, u: float) -> Any:
        """The value at unit coordinate u in [0, 1)."""
        u = min(max(float(u), 0.0), np.nextafter(1.0, 0.0))
        if self.kind == "choice":
            return self.args[int(u * len(self.args))]
        if self.kind == "int":
            return int(self.args[0] + math.floor(u * (self.args[1] - self.args[0] + 1)))
        lo, hi = self._to_warped(self.low), self._to_warped(self.high)
        return self._from_warped(lo + u * (hi - lo))

    def unit(self, value: Any) -> float:
        """Inverse of `value` for continuous kinds (position within the range)."""
        lo, hi = self._to_warped(self.low), self._to_warped(self.high)
        return (self._to_warped(value) - lo) / (hi - lo)

    def grid(self, points: int) -> list[Any]:
        """Grid values: every choice/int, else `points` evenly in warped space."""
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int":
            count = self.args[1] - self.args[0] + 1
            if count <= points:
                return list(range(self.args[0], self.args[1] + 1))
        if self.kind == "int":
            return sorted({self.value(min(i / (points - 1), 0.999999)) for i in range(points)}) if points > 1 else [
                self.value(0.5)]
        if points == 1:
            return [self.value(0.5)]
        lo, hi = self._to_warped(self.low), self._to_warped(self.high)
        # Endpoints exactly: the grid includes both bounds.
        return [self.low] + [self._from_warped(lo + i / (points - 1) * (hi - lo)) for i in range(1, points - 1)] + [
            self.high]

    def with_range(self, low: float, high: float) -> "Distribution":
        return Distribution(self.kind, (low, high))

    def warped_bounds(self) -> tuple[float, float]:
        return self._to_warped(self.low), self._to_warped(self.high)

    def from_warped(self, warped: float) -> float:
        return self._from_warped(warped)

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(repr(a) for a in self.args)})"


def parse_distribution(key: str, spec: Any) -> Distribution:
    """Parses `"kind(a, b, ...)"` (or a list/tuple, taken as a choice)."""
    if isinstance(spec, (list, tuple)):
        kind, args = "choice", tuple(spec)
    else:
        text = str(spec).strip()
        if "(" not in text or not text.endswith(")"):
            raise SpaceError(f"sweep.space.{key}={spec!r}: expected KIND(ARGS) with KIND one of "
                             f"{', '.join(DISTRIBUTION_CHOICES)}")
        kind, rest = text.split("(", 1)
        kind = kind.strip()
        try:
            args = ast.literal_eval(f"({rest[:-1]},)") if rest[:-1].strip() else ()
        except (ValueError, SyntaxError) as err:
            raise SpaceError(f"sweep.space.{key}={spec!r}: cannot read the arguments ({err})") from None
    if kind not in DISTRIBUTION_CHOICES:
        raise SpaceError(f"sweep.space.{key}: unknown distribution {kind!r}; valid choices: "
                         f"{', '.join(DISTRIBUTION_CHOICES)}")
    if kind == "choice":
        if not args:
            raise SpaceError(f"sweep.space.{key}: choice() needs at least one value")
        return Distribution(kind, tuple(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
        raise SpaceError(f"sweep.space.{key}: {kind} takes two numbers (low, high), got {args}")
    low, high = args
    if not low < high:
        raise SpaceError(f"sweep.space.{key}: empty or inverted range {kind}({low}, {high}); need low < high")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"sweep.space.{key}: loguniform needs low > 0, got {low}")
    if kind == "one_minus_loguniform" and not (0 <= low and high < 1):
        raise SpaceError(f"sweep.space.{key}: one_minus_loguniform needs 0 <= low < high < 1, got ({low}, {high})")
    if kind == "int" and not all(float(a).is_integer() for a in args):
        raise SpaceError(f"sweep.space.{key}: int takes integer bounds, got {args}")
    if kind == "int":
        return Distribution(kind, (int(low), int(high)))
    return Distribution(kind, (float(low), float(high)))


def flatten_space(space: Any, prefix: str = "") -> dict[str, Distribution]:
    """A nested ConfigDict/dict of specs -> {'a.b': Distribution}."""
    out: dict[str, Distribution] = {}
    items = space.items() if hasattr(space, "items") else []
    for key, value in items:
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            out.update(flatten_space(value, path + "."))
        elif value is not None:
            out[path] = parse_distribution(path, value)
    return out


def unit_points(sampler: str, num_points: int, dims: int, seed: int) -> np.ndarray:
    """`num_points` points of [0,1)^dims from `random` or `quasi_random` (scrambled Halton)."""
    if sampler == "random":
        return np.random.default_rng(seed).random((num_points, dims))
    if sampler == "quasi_random":
        from scipy.stats import qmc

        if dims == 0:
            return np.zeros((num_points, 0))
        return qmc.Halton(d=dims, scramble=True, seed=seed).random(num_points)
    raise SpaceError(f"Unknown sampler {sampler!r}; valid choices: {', '.join(SAMPLER_CHOICES)}")


def sample(space: dict[str, Distribution], sampler: str, num_members: int | None, seed: int = 0,
           grid_points: int = 3) -> list[dict[str, Any]]:
    """Draws the members' hyperparameter values.

    Args:
      space: flattened space.
      sampler: one of `SAMPLER_CHOICES`.
      num_members: the budget P; for `grid`, None means the whole grid, and a
        grid larger than P is an error.
      seed: sampler seed.
      grid_points: grid values per continuous dimension.
    """
    keys = sorted(space)
    if sampler == "grid":
        axes = [space[k].grid(grid_points) for k in keys]
        points = list(itertools.product(*axes))
        if num_members is not None and len(points) > num_members:
            raise SpaceError(
                f"the grid has {len(points)} points ({' x '.join(str(len(a)) for a in axes)} over "
                f"{', '.join(keys)}), larger than the budget sweep.population_size={num_members}; "
                "lower sweep.grid_points or raise the budget"
            )
        return [dict(zip(keys, p)) for p in points]
    if num_members is None or num_members < 1:
        raise SpaceError(f"sweep.population_size must be >= 1, got {num_members}")
    units = unit_points(sampler, num_members, len(keys), seed)
    return [{k: space[k].value(u[i]) for i, k in enumerate(keys)} for u in units]


def check_paths(space: dict[str, Distribution], config: Any) -> None:
    """Every key must be a config key the chosen model/optimiser actually has."""
    from cnnjax.models import model_fields

    for path in space:
        node = config
        parts = path.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise SpaceError(f"sweep.space.{path}: the config has no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise SpaceError(f"sweep.space.{path}: the config has no key {path!r}")
    for path in space:
        if path == "optimizer.ema_decay":  # every optimiser has it; a member's value lives in its state's EMA
            if not config.optimizer.get("ema_decay", 0.0):
                raise SpaceError("sweep.space.optimizer.ema_decay: the members' EMA needs one in the state; set "
                                 "--config.optimizer.ema_decay to a value in (0, 1) as well (the members then "
                                 "take the sampled decays)")
            continue
        if path == "optimizer.accumulate_steps":
            raise SpaceError("sweep.space.optimizer.accumulate_steps: cannot vary between members (it changes "
                             "how many micro-batches one update takes, for every member alike); set "
                             "--config.optimizer.accumulate_steps instead")
        if path.startswith("optimizer.") and path != "optimizer.name":
            names = space["optimizer.name"].args if "optimizer.name" in space else (config.optimizer.name,)
            for name in names:
                if not takes_hyperparameter(name, path.split(".")[1]):
                    raise SpaceError(f"sweep.space.{path}: optimizer {name!r} has no hyperparameter "
                                     f"{path.split('.')[1]!r}; it has: "
                                     f"{', '.join(('learning_rate', 'weight_decay') + tuple(OPTIMIZER_HPARAMS.get(name, {})))}")
        if path.startswith("model.") and path != "model.name":
            names = space["model.name"].args if "model.name" in space else (config.model.name,)
            for name in names:
                if path.split(".")[1] not in model_fields(name):
                    raise SpaceError(f"sweep.space.{path}: model {name!r} has no option {path.split('.')[1]!r}")


def split_static(members: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], list[int]]]:
    """Groups members by their static (shape/code-changing) values.

    Returns [(static values, member indices)], in first-seen order.
    """
    groups: dict[tuple, list[int]] = {}
    statics: dict[tuple, dict[str, Any]] = {}
    for i, member in enumerate(members):
        static = {k: v for k, v in member.items() if k not in TRACED_PATHS}
        key = tuple(sorted((k, repr(v)) for k, v in static.items()))
        groups.setdefault(key, []).append(i)
        statics[key] = static
    return [(statics[k], idx) for k, idx in groups.items()]


def narrow_space(space: dict[str, Distribution], top: list[dict[str, Any]],
                 edge_fraction: float = 0.1) -> tuple[dict[str, Distribution], list[str]]:
    """The next coarse-to-fine range of each continuous dimension.

    `top` holds the best members' values, best first. Each range shrinks (in
    warped, e.g. log, space) to the span of `top` plus 10% of the old width on
    each side; when the best value lies within `edge_fraction` of an edge, the
    range is instead widened past that edge by half its width, with a warning.
    """
    new_space, warnings = dict(space), []
    for path, dist in space.items():
        if dist.kind in ("choice", "int"):
            continue
        lo, hi = dist.warped_bounds()
        width = hi - lo
        vals = [dist._to_warped(values[path]) for values in top]
        best = vals[0]
        new_lo, new_hi = max(lo, min(vals) - 0.1 * width), min(hi, max(vals) + 0.1 * width)
        if best - lo < edge_fraction * width:
            new_lo = lo - 0.5 * width
            warnings.append(f"best {path}={top[0][path]:.4g} sits on the low edge of {dist}; widening below it")
        if hi - best < edge_fraction * width:
            new_hi = hi + 0.5 * width
            warnings.append(f"best {path}={top[0][path]:.4g} sits on the high edge of {dist}; widening above it")
        new_lo_v, new_hi_v = dist.from_warped(new_lo), dist.from_warped(new_hi)
        if dist.kind == "one_minus_loguniform":
            new_lo_v, new_hi_v = max(new_lo_v, 0.0), min(new_hi_v, 1 - 1e-9)
        new_space[path] = dist.with_range(new_lo_v, new_hi_v)
    return new_space, warnings
