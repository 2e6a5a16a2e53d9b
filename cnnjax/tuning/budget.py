"""How much a sweep trains: Hyperband's brackets and the member-steps of a whole sweep."""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from cnnjax.tuning import space as space_lib
from cnnjax.tuning import study as study_lib


def hyperband_brackets(max_epochs: float, min_epochs: float, eta: int) -> list[dict[str, Any]]:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1) with resource = epochs.

    With R = max_epochs / min_epochs and s_max = floor(log_eta R), bracket s
    (from s_max down to 0) starts ceil((s_max + 1) / (s + 1) * eta^s) members at
    max_epochs * eta^-s epochs each and halves by eta up to max_epochs: the
    most aggressive bracket tries many members briefly, the last trains few
    for the whole budget. Every bracket spends about the same compute.
    """
    s_max = int(math.floor(math.log(max_epochs / min_epochs) / math.log(eta) + 1e-9))
    return [{"bracket": b, "members": int(math.ceil((s_max + 1) / (b + 1) * eta**b)),
             "min_epochs": max_epochs * float(eta) ** (-b)} for b in range(s_max, -1, -1)]


def planned_member_steps(config: ml_collections.ConfigDict, space, num_train_examples: int) -> int | None:
    """The sweep's member-steps in all (for the progress bar's ETA); None when groups change the budget."""
    if any(p in space for p in ("batch_size", "num_epochs")):
        return None
    s, spe = config.sweep, num_train_examples // config.batch_size
    size = (len(space_lib.sample(space, "grid", None, grid_points=s.grid_points)) if s.sampler == "grid"
            else s.population_size)

    def halving(size, rung_epochs):
        total = done = 0
        while True:
            target = min(rung_epochs, config.num_epochs)
            steps = int(round(target * spe)) - done
            total, done = total + size * steps, done + steps
            if target >= config.num_epochs or size == 1:
                return total
            size, rung_epochs = math.ceil(size / s.eta), rung_epochs * s.eta

    full = int(spe * config.num_epochs)
    if s.strategy == "coarse_to_fine" or s.sampler in study_lib.OPTUNA_SAMPLERS:
        return s.rounds * size * full
    if s.strategy == "successive_halving":
        return halving(size, s.min_epochs)
    if s.strategy == "hyperband":
        return sum(halving(b["members"], b["min_epochs"])
                   for b in hyperband_brackets(config.num_epochs, s.min_epochs, s.eta))
    return size * full
