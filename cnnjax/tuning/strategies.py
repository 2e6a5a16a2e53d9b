"""The sweep strategies (`sweep.strategy`), each `run_<name>(sweep)` on a `Sweep`.

- `single`: one population of `sweep.population_size` members drawn by
  `sweep.sampler` (grid / random / quasi_random), trained for `num_epochs`.
- `coarse_to_fine`: `sweep.rounds` populations; each round narrows every
  continuous dimension (in its warped, e.g. log, space) to the span of the
  previous round's `top_k`, and widens past an edge (with a warning in the
  results) when the best value sits on that edge of the range.
- `successive_halving`: rungs at `min_epochs * eta^k` epochs; after each rung
  the best 1/eta members are repacked on device into a smaller population.
- `hyperband`: successive halving in several brackets (Li et al. 2018), from
  many members started at `min_epochs` to a few trained for `num_epochs`;
  bracket sizes follow from `num_epochs / min_epochs` and `eta`
  (`sweep.population_size` is not used).
- `pbt`: every `pbt_interval_epochs` the worst `pbt_fraction` copy parameters
  and optimiser state of members from the best fraction and perturb their
  hyperparameters by a factor from `pbt_perturb`, all on device.
Values that change shapes or code (model, optimiser kind, batch size...) split a
sweep into groups, each its own population, run one after another.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cnnjax.tuning import space as space_lib
from cnnjax.tuning.best import score
from cnnjax.tuning.budget import hyperband_brackets
from cnnjax.tuning.context import Sweep, group_members, traced_values, train_groups
from cnnjax.tuning.population import set_member_values, take_members
from cnnjax.tuning.space import narrow_space

# PBT perturbs only values that act during training (not seeds or init scale).
PBT_PERTURBABLE = tuple(p for p in space_lib.TRACED_PATHS if p not in ("seed", "data_seed", "model.init_scale"))


def run_single(sweep: Sweep) -> None:
    s = sweep.config.sweep
    members = space_lib.sample(sweep.space, s.sampler, None if s.sampler == "grid" else s.population_size,
                               seed=s.seed, grid_points=s.grid_points)
    train_groups(sweep, members, sweep.new_records(members))


def run_coarse_to_fine(sweep: Sweep, edge_fraction: float = 0.1) -> None:
    s = sweep.config.sweep
    space = dict(sweep.space)
    rounds = []
    for r in range(s.rounds):
        members = space_lib.sample(space, s.sampler, s.population_size, seed=s.seed + r)
        ids = sweep.new_records(members, round_index=r)
        train_groups(sweep, members, ids, f"round {r + 1}/{s.rounds}")
        ranked = sorted(ids, key=lambda i: -score(sweep.records[i]))
        top = [sweep.records[i] for i in ranked[: s.top_k]]
        rounds.append({"round": r, "space": {k: str(v) for k, v in space.items()},
                       "best": top[0].best_val_accuracy, "best_member": top[0].member})
        if r == s.rounds - 1:
            break
        new_space, warnings = narrow_space(space, [rec.values for rec in top], edge_fraction)
        sweep.warnings += [f"round {r}: {w}" for w in warnings]
        space = new_space
    sweep.extra = {"rounds": rounds}


def _halve(sweep: Sweep, members: list[dict[str, Any]], ids: list[int], min_epochs: float,
           label: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Successive halving of `members` from a first rung at `min_epochs`; returns the rung log."""
    s = sweep.config.sweep
    rungs_log = []
    for static, idx in group_members(members):
        group_config, pop, trainer = sweep.group(static, members, ids, idx)
        epochs_done, rung_epochs = 0.0, min_epochs
        while True:
            target = min(rung_epochs, group_config.num_epochs)
            steps = int(round(target * pop.steps_per_epoch)) - pop.step
            where = ", ".join(f"{k} {v}" for k, v in (label or {}).items())
            pop = sweep.phases.train(trainer, pop, steps, None,
                                     f"{where + ', ' if where else ''}rung {len(rungs_log) + 1} "
                                     f"({pop.size} member{'s' if pop.size > 1 else ''} to {target:g} epochs)")
            epochs_done = target
            ranked = sorted(range(pop.size), key=lambda i: -score(sweep.records[pop.ids[i]]))
            keep = max(1, math.ceil(pop.size / s.eta))
            rungs_log.append({**(label or {}), "group": static, "epochs": epochs_done, "members": list(pop.ids),
                              "kept": [pop.ids[i] for i in ranked[:keep]]})
            for i in ranked[keep:]:
                sweep.records[pop.ids[i]].extra["stopped_at_epoch"] = epochs_done
            if epochs_done >= group_config.num_epochs or pop.size == 1:
                break
            pop = take_members(pop, sorted(ranked[:keep]))
            rung_epochs *= s.eta
        sweep.note_plans(trainer, static)
    return rungs_log


def run_successive_halving(sweep: Sweep) -> None:
    s = sweep.config.sweep
    members = space_lib.sample(sweep.space, s.sampler, None if s.sampler == "grid" else s.population_size,
                               seed=s.seed, grid_points=s.grid_points)
    ids = sweep.new_records(members)
    sweep.extra = {"rungs": _halve(sweep, members, ids, s.min_epochs)}


def run_hyperband(sweep: Sweep) -> None:
    s = sweep.config.sweep
    brackets = hyperband_brackets(sweep.config.num_epochs, s.min_epochs, s.eta)
    rungs = []
    for k, bracket in enumerate(brackets):
        members = space_lib.sample(sweep.space, s.sampler, bracket["members"], seed=s.seed + k)
        ids = sweep.new_records(members, round_index=bracket["bracket"])
        for i in ids:
            sweep.records[i].extra["bracket"] = bracket["bracket"]
            del sweep.records[i].extra["round"]
        rungs += _halve(sweep, members, ids, bracket["min_epochs"], {"bracket": bracket["bracket"]})
    sweep.extra = {"brackets": brackets, "rungs": rungs}


def run_pbt(sweep: Sweep) -> None:
    s = sweep.config.sweep
    members = space_lib.sample(sweep.space, s.sampler, None if s.sampler == "grid" else s.population_size,
                               seed=s.seed, grid_points=s.grid_points)
    ids = sweep.new_records(members)
    rng = np.random.default_rng(s.seed)
    events = []
    for static, idx in group_members(members):
        group_config, pop, trainer = sweep.group(static, members, ids, idx)
        interval = max(1, int(round(s.pbt_interval_epochs * pop.steps_per_epoch)))
        while pop.step < pop.total_steps:
            pop = sweep.phases.train(trainer, pop, min(interval, pop.total_steps - pop.step), None,
                                     f"PBT interval {pop.step // interval + 1}/{-(-pop.total_steps // interval)}")
            if pop.step >= pop.total_steps:
                break
            scores = [sweep.records[m].val_accuracy if not sweep.records[m].diverged else -1.0 for m in pop.ids]
            order = np.argsort(scores)
            count = max(1, int(round(s.pbt_fraction * pop.size)))
            if pop.size < 2:
                break
            losers, winners = order[:count], order[-count:]
            source = list(range(pop.size))
            values = [dict(v) for v in pop.values]
            for loser in losers:
                winner = int(rng.choice(winners))
                source[loser] = winner
                new = dict(pop.values[winner])
                for path in new:
                    if path in PBT_PERTURBABLE and isinstance(new[path], float):
                        new[path] = _perturb(path, new[path], float(rng.choice(s.pbt_perturb)))
                values[loser] = new
                events.append({"step": pop.step, "member": pop.ids[loser], "copied_from": pop.ids[winner],
                               "values": new})
            pop = _exploit(pop, source, values, group_config)
            for i, m in enumerate(pop.ids):
                sweep.records[m].values = dict(values[i])
                if i in set(int(x) for x in losers):
                    sweep.records[m].diverged = False  # a copied member restarts from healthy weights
                    sweep.records[m].diverged_step = None
        sweep.note_plans(trainer, static)
    sweep.extra = {"pbt_events": events}


def _perturb(path: str, value: float, factor: float) -> float:
    if path.startswith(("optimizer.momentum", "optimizer.b1", "optimizer.b2", "optimizer.rho", "optimizer.decay")):
        return float(min(1 - (1 - value) / factor, 0.9999))  # perturb 1-beta, stay below 1
    if path in ("loss.label_smoothing", "model.dropout_rate"):
        return float(min(value * factor, 0.95))
    return float(value * factor)


def _exploit(pop, source, values, config):
    """Members copy the state of `source[i]` (weights, optimiser, BN) and take `values[i]`."""
    moved = take_members(pop, source)
    state = set_member_values(moved.state, config, [traced_values(v) for v in values])
    return dataclasses.replace(moved, state=state, values=[traced_values(v) for v in values], ids=list(pop.ids),
                               data_keys=pop.data_keys)


STRATEGIES = {
    "single": run_single,
    "coarse_to_fine": run_coarse_to_fine,
    "successive_halving": run_successive_halving,
    "hyperband": run_hyperband,
    "pbt": run_pbt,
}

def strategy_problems(sweep: Any) -> list[str]:
    """What is wrong with `sweep.strategy` and the keys only it reads (the `sweep` block; empty when valid)."""
    if sweep.strategy not in STRATEGIES:
        return [f"sweep.strategy={sweep.strategy!r} is unknown; valid choices: {', '.join(STRATEGIES)}"]
    errors = []
    if sweep.strategy == "coarse_to_fine" and (sweep.rounds < 1 or not 1 <= sweep.top_k <= sweep.population_size):
        errors.append(f"coarse_to_fine needs sweep.rounds >= 1 and 1 <= sweep.top_k <= population_size "
                      f"(got rounds={sweep.rounds}, top_k={sweep.top_k})")
    if sweep.strategy in ("successive_halving", "hyperband") and (sweep.eta < 2 or sweep.min_epochs <= 0):
        errors.append(f"{sweep.strategy} needs sweep.eta >= 2 and sweep.min_epochs > 0 "
                      f"(got eta={sweep.eta}, min_epochs={sweep.min_epochs})")
    if sweep.strategy == "pbt" and not (0 < sweep.pbt_fraction <= 0.5 and sweep.pbt_interval_epochs > 0):
        errors.append("pbt needs 0 < sweep.pbt_fraction <= 0.5 and sweep.pbt_interval_epochs > 0")
    return errors


def strategy_space_problem(config: Any, space: dict[str, space_lib.Distribution]) -> str | None:
    """Why the strategy cannot run on this sampler, space or training length (None: it can)."""
    s = config.sweep
    if s.strategy in ("coarse_to_fine", "hyperband") and s.sampler == "grid":
        return f"{s.strategy} samples with random or quasi_random, not grid"
    if s.strategy == "hyperband" and s.min_epochs > config.num_epochs:
        return (f"hyperband needs sweep.min_epochs <= num_epochs "
                f"(got min_epochs={s.min_epochs}, num_epochs={config.num_epochs})")
    if s.strategy == "pbt" and not any(p in PBT_PERTURBABLE for p in space):
        return f"pbt needs a dimension it can perturb: one of {', '.join(PBT_PERTURBABLE)}"
    return None
