"""`run_sweep(config, workdir)`: a hyperparameter search as populations.

Strategies (`sweep.strategy`):
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
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.training import config as config_lib
from cnnjax.training import files
from cnnjax.training.loop import StopRequest
from cnnjax.training.sharding import is_primary
from cnnjax.training.train import check_workdir, config_as_json, load_dataset_once
from cnnjax.training.writers import write_json
from cnnjax.tuning import plans as plans_lib
from cnnjax.tuning import space as space_lib
from cnnjax.tuning import study as study_lib
from cnnjax.tuning import tb_hparams
from cnnjax.tuning.best import score, write_best_runs
from cnnjax.tuning.budget import hyperband_brackets, planned_member_steps
from cnnjax.tuning.context import Sweep, SweepError, group_members, member_mesh, traced_values, train_groups
from cnnjax.tuning.model_based import run_model_based
from cnnjax.tuning.population import member_config, set_member_values, take_members
from cnnjax.tuning.resume import SweepInterrupted, SweepResumeError
from cnnjax.tuning.runner import AgreedStop
from cnnjax.tuning.space import narrow_space

STRATEGY_CHOICES = ("single", "coarse_to_fine", "successive_halving", "hyperband", "pbt")
# PBT perturbs only values that act during training (not seeds or init scale).
PBT_PERTURBABLE = tuple(p for p in space_lib.TRACED_PATHS if p not in ("seed", "data_seed", "model.init_scale"))


def read_space(config: ml_collections.ConfigDict) -> dict[str, space_lib.Distribution]:
    space = space_lib.flatten_space(config.sweep.space)
    for item in filter(None, (s.strip() for s in config.sweep.get("space_extra", "").split(";"))):
        if "=" not in item:
            raise SweepError(f"sweep.space_extra item {item!r}: expected PATH=SPEC")
        path, spec = (x.strip() for x in item.split("=", 1))
        space[path] = space_lib.parse_distribution(path, spec)
    return space


def validate_sweep(config: ml_collections.ConfigDict) -> dict[str, space_lib.Distribution]:
    """Checks the sweep block; returns the flattened space."""
    sweep = config.sweep
    errors = []
    if sweep.strategy not in STRATEGY_CHOICES:
        errors.append(f"sweep.strategy={sweep.strategy!r} is unknown; valid choices: {', '.join(STRATEGY_CHOICES)}")
    samplers = space_lib.SAMPLER_CHOICES + study_lib.OPTUNA_SAMPLERS
    if sweep.sampler not in samplers:
        errors.append(f"sweep.sampler={sweep.sampler!r} is unknown; valid choices: {', '.join(samplers)}")
    if sweep.sampler in study_lib.OPTUNA_SAMPLERS and sweep.strategy != "single":
        errors.append(f"sweep.sampler={sweep.sampler!r} proposes each round's population itself: it runs with "
                      f"sweep.strategy='single' (sweep.rounds rounds), not {sweep.strategy!r}")
    if sweep.sampler in study_lib.OPTUNA_SAMPLERS and sweep.rounds < 1:
        errors.append(f"sweep.sampler={sweep.sampler!r} needs sweep.rounds >= 1, got {sweep.rounds}")
    if sweep.plan not in plans_lib.PLAN_CHOICES:
        errors.append(f"sweep.plan={sweep.plan!r} is unknown; valid choices: {', '.join(plans_lib.PLAN_CHOICES)}")
    if sweep.keep_best < 0:
        errors.append(f"sweep.keep_best must be >= 0 (0: keep no member's state), got {sweep.keep_best}")
    if sweep.population_size < 1:
        errors.append(f"sweep.population_size must be >= 1, got {sweep.population_size}")
    if sweep.chunk_size is not None and sweep.chunk_size < 1:
        errors.append(f"sweep.chunk_size must be >= 1, got {sweep.chunk_size}")
    if sweep.grid_points < 1:
        errors.append(f"sweep.grid_points must be >= 1, got {sweep.grid_points}")
    if sweep.strategy == "coarse_to_fine" and (sweep.rounds < 1 or not 1 <= sweep.top_k <= sweep.population_size):
        errors.append(f"coarse_to_fine needs sweep.rounds >= 1 and 1 <= sweep.top_k <= population_size "
                      f"(got rounds={sweep.rounds}, top_k={sweep.top_k})")
    if sweep.strategy in ("successive_halving", "hyperband") and (sweep.eta < 2 or sweep.min_epochs <= 0):
        errors.append(f"{sweep.strategy} needs sweep.eta >= 2 and sweep.min_epochs > 0 "
                      f"(got eta={sweep.eta}, min_epochs={sweep.min_epochs})")
    if sweep.strategy == "pbt" and not (0 < sweep.pbt_fraction <= 0.5 and sweep.pbt_interval_epochs > 0):
        errors.append("pbt needs 0 < sweep.pbt_fraction <= 0.5 and sweep.pbt_interval_epochs > 0")
    if errors:
        raise SweepError("Invalid sweep:\n  - " + "\n  - ".join(errors))
    space = read_space(config)
    if not space:
        raise SweepError("sweep.space is empty: give at least one dimension, e.g. "
                         "--config.sweep.space_extra='optimizer.learning_rate=loguniform(1e-3, 1)'")
    space_lib.check_paths(space, config)
    if sweep.strategy in ("coarse_to_fine", "hyperband") and sweep.sampler == "grid":
        raise SweepError(f"{sweep.strategy} samples with random or quasi_random, not grid")
    if sweep.strategy == "hyperband" and sweep.min_epochs > config.num_epochs:
        raise SweepError(f"hyperband needs sweep.min_epochs <= num_epochs "
                         f"(got min_epochs={sweep.min_epochs}, num_epochs={config.num_epochs})")
    if sweep.strategy == "pbt" and not any(p in PBT_PERTURBABLE for p in space):
        raise SweepError(f"pbt needs a dimension it can perturb: one of {', '.join(PBT_PERTURBABLE)}")
    if sweep.sampler == "grid":
        space_lib.sample(space, "grid", sweep.population_size, grid_points=sweep.grid_points)
    try:
        study_lib.distributions(space, propose=sweep.sampler in study_lib.OPTUNA_SAMPLERS)
        study_lib.check_sampler_available(sweep.sampler)
    except study_lib.StudyError as err:
        raise SweepError(str(err)) from None
    return space


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
        group_config = member_config(sweep.config, static)
        pop = sweep.population(group_config, [members[i] for i in idx], [ids[i] for i in idx])
        trainer = sweep.trainer(group_config)
        trainer.group = static
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
        group_config = member_config(sweep.config, static)
        pop = sweep.population(group_config, [members[i] for i in idx], [ids[i] for i in idx])
        trainer = sweep.trainer(group_config)
        trainer.group = static
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


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
              allow_config_change: bool = False, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Runs `config.sweep` and writes results.csv/json, metrics.jsonl, plots, summary.json.

    Checkpoints the sweep (see `cnnjax.tuning.resume`); the same call on the same
    workdir resumes it. `stop_after_steps` stops (with a checkpoint) once the
    sweep's phases have taken that many steps in all, as a preemption would;
    SIGTERM / Ctrl-C do the same at once. A stopped sweep returns
    `{"status": "interrupted", ...}`.
    """
    start = time.time()
    config_lib.validate_config(config)
    space = validate_sweep(config)
    member_mesh(config.sweep.mesh_devices)  # devices and processes that cannot hold the sweep: refused now
    if dataset is None:
        dataset = load_dataset_once(config)
    config_lib.validate_against_data(config, dataset.train.num_examples)
    check_workdir(config, workdir, allow_config_change)
    if not allow_config_change and files.exists(os.path.join(workdir, "results.json")):
        raise SweepError(f"{workdir} already holds sweep results; use a new --workdir")
    try:
        study_lib.check_storage(config.sweep, workdir)
    except study_lib.StudyError as err:
        raise SweepError(str(err)) from None
    # With several processes (`jax.distributed`) every one trains its members; process 0 alone writes
    # the files other than checkpoints (which orbax writes with all of them).
    primary = is_primary()
    if primary:
        files.makedirs(workdir)

    from tqdm.auto import tqdm

    planned = planned_member_steps(config, space, dataset.train.num_examples)
    progress = tqdm(total=planned, unit="member-step", disable=not (config.progress_bar and primary),
                    dynamic_ncols=True)
    progress.planned = planned is not None
    with StopRequest() as local_stop:
        stop = AgreedStop(local_stop) if jax.process_count() > 1 else local_stop
        try:
            sweep = Sweep(config, dataset, workdir, space, progress, stop_after_steps=stop_after_steps, stop=stop,
                          checkpoints=True, open_study=lambda: study_lib.open_study(config.sweep, workdir, space))
        except (SweepResumeError, study_lib.StudyError) as err:
            progress.close()
            raise SweepError(str(err)) from None
        if primary:
            write_json(os.path.join(workdir, "config.json"), config_as_json(config))
        sweep.extra, sweep.start_time = {}, start
        try:
            if config.sweep.sampler in study_lib.OPTUNA_SAMPLERS:
                run_model_based(sweep)
            else:
                STRATEGIES[config.sweep.strategy](sweep)
            best_runs = write_best_runs(sweep)
        except SweepResumeError as err:
            raise SweepError(str(err)) from None
        except SweepInterrupted as stopped:
            progress.close()
            message = (f"Sweep stopped at {stopped}; checkpoint saved in {sweep.phases.checkpointer.directory}. "
                       "Run the same command again to resume.")
            logging.warning(message)
            print(message, flush=True)
            return {"status": "interrupted", "stopped_at": str(stopped), "members": len(sweep.records)}
        finally:
            sweep.profiler.close()
            progress.close()
            if sweep.writer:
                sweep.writer.close()
            sweep.phases.close()

    from cnnjax.tuning import report

    rows = [rec.row() for rec in sweep.records.values()]
    plots = []
    if primary:
        report.write_results(workdir, rows)
        plots = report.write_plots(workdir, rows, space)
        sweep.study.record(sweep.records.values())  # model-free samplers: every member a finished trial
        tb_hparams.write_member_runs(workdir, sweep.records.values(), sorted(space))
    alive = [r for r in rows if not r["diverged"] and math.isfinite(r["best_val_accuracy"])]
    best = max(alive, key=lambda r: r["best_val_accuracy"]) if alive else None
    summary = {
        "status": "completed",
        "strategy": config.sweep.strategy,
        "members": len(rows),
        "diverged": sum(r["diverged"] for r in rows),
        "best_member": best["member"] if best else None,
        "best_val_accuracy": best["best_val_accuracy"] if best else None,
        "best_values": {k: best[k] for k in space if k in best} if best else None,
        "warnings": sweep.warnings,
        "plans": sweep.plans_used,
        "plots": plots,
        "best_runs": best_runs,
        "study": {"name": sweep.study.name, "storage": sweep.study.storage_url} if sweep.study else None,
        "wall_time_s": time.time() - start,
        **sweep.extra,
    }
    if primary:
        write_json(os.path.join(workdir, "summary.json"), summary)
    for warning in sweep.warnings:
        logging.warning(warning)
    return summary
