"""`run_sweep(config, workdir)`: a hyperparameter search as populations.

Checks the `sweep` block (`cnnjax.tuning.sweep_config.validate_sweep`), then runs the strategy that
`sweep.strategy` names (see `cnnjax.tuning.strategies`) and writes the results.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from cnnjax.training import config as config_lib
from cnnjax.training import files
from cnnjax.training.loop import StopRequest
from cnnjax.training.sharding import is_primary
from cnnjax.training.train import check_workdir, config_as_json, load_dataset_once
from cnnjax.training.writers import write_json
from cnnjax.tuning import study as study_lib
from cnnjax.tuning import tb_hparams
from cnnjax.tuning.best import write_best_runs
from cnnjax.tuning.budget import planned_member_steps
from cnnjax.tuning.context import Sweep, SweepError, member_mesh
from cnnjax.tuning.model_based import run_model_based
from cnnjax.tuning.resume import SweepInterrupted, SweepResumeError
from cnnjax.tuning.runner import AgreedStop
from cnnjax.tuning.strategies import STRATEGIES
from cnnjax.tuning.sweep_config import validate_sweep


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
    config_lib.validate_training(config)
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
