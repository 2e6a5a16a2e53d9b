"""`babysit(config, workdir)`: pre-flight checks, then a monitored run, then the report.

Order of work: validate the config (the `monitor` and `babysit` blocks too),
load the data, check the workdir, and only then compile and write. Outputs in
the workdir, besides a normal run's: `babysit.json` (every check and verdict
with its figures), `report.md`, `report.html` (self-contained) and the PNGs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import ml_collections

from cnnjax.diagnostics import report, settings
from cnnjax.diagnostics.checks import (
    FAIL,
    CheckContext,
    CheckResult,
    check_initial_loss,
    check_overfit,
    check_regularization,
    check_symmetry,
)
from cnnjax.diagnostics.lr_range import check_lr_range
from cnnjax.diagnostics.training_monitor import TrainingMonitor
from cnnjax.diagnostics.verdicts import Verdict
from cnnjax.training import config as config_lib
from cnnjax.training import files
from cnnjax.training.steps import train_step
from cnnjax.training.train import NonFiniteLossError, build_model, check_workdir, train_and_evaluate
from cnnjax.training.writers import write_json

# In the order the seed notes walk through them.
CHECK_ORDER = (check_initial_loss, check_regularization, check_overfit, check_lr_range, check_symmetry)


class SymmetryRefusal(RuntimeError):
    """The init is constant: training would never break the symmetry."""


def _print_result(result: CheckResult) -> None:
    print(f"[{result.status.upper():4}] {result.name}: {result.measured}\n"
          f"       expected: {result.expected}\n       {result.advice}", flush=True)


def run_checks(ctx: CheckContext, checks=CHECK_ORDER, echo: bool = True) -> list[CheckResult]:
    """Runs `checks` in order and returns their results."""
    results = []
    for check in checks:
        result = check(ctx)
        if echo:
            _print_result(result)
        results.append(result)
    return results


def babysit(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    dataset=None,
    train: bool | None = None,
    allow_config_change: bool = False,
    step_fn: Callable = train_step,
    checks: tuple = CHECK_ORDER,
    echo: bool = True,
) -> dict[str, Any]:
    """Runs the pre-flight checks, then (unless told not to) trains with monitors on.

    Args:
      config: a config built on `cnnjax.config.base_config()`.
      workdir: output directory.
      dataset: an already loaded `cnnjax.data.Dataset` (skips loading).
      train: train after the checks; default `config.babysit.train`.
      allow_config_change: see `train_and_evaluate`.
      step_fn: the step the checks test (tests pass broken ones).
      checks: the checks to run, in order.
      echo: print each check and verdict as it comes.

    Returns:
      The contents of `babysit.json`.

    Raises:
      ConfigError: a bad config (before anything is written).
      SymmetryRefusal: the zero-init symmetry check failed and
        `babysit.force` is not set (the reports are written first).
    """
    start = time.time()
    config_lib.validate_training(config)
    thresholds, check_settings = settings.validate(config)
    if dataset is None:
        from cnnjax.data import load_dataset

        dataset = load_dataset(config.data)
    config_lib.validate_against_data(config, dataset.train.num_examples)
    check_workdir(config, workdir, allow_config_change)
    train = check_settings.train if train is None else train
    model = build_model(config, dataset.num_classes)

    ctx = CheckContext(config, dataset, model, check_settings, step_fn=step_fn)
    results = run_checks(ctx, checks, echo=echo)
    files.makedirs(workdir)
    out: dict[str, Any] = {
        "model": config.model.name,
        "dataset": dataset.name,
        "checks": [r.as_dict() for r in results],
        "checks_passed": all(r.passed for r in results),
        "thresholds": {"monitor": vars(thresholds), "babysit": vars(check_settings)},
    }
    symmetry = next((r for r in results if r.name == "zero-init symmetry"), None)
    refused = symmetry is not None and symmetry.status == FAIL and not check_settings.force
    monitor = None
    if refused:
        out["training"] = {"status": "refused", "reason": symmetry.advice}
    elif train:
        monitor = TrainingMonitor(config, dataset, model, thresholds, emit=None if echo else (lambda line: None))
        out["training"] = _train(config, workdir, dataset, monitor, allow_config_change)
        out["verdicts"] = [vars(v) for v in monitor.verdicts]
        out["history"] = {"train": monitor.history.train, "val": monitor.history.val,
                          "monitored": monitor.history.monitored, "histograms": monitor.history.histograms}
    out["wall_time_s"] = time.time() - start
    out["report"] = report.write_report(workdir, out, monitor)
    write_json(os.path.join(workdir, "babysit.json"), out)
    if echo:
        print(f"Babysitting report: {os.path.join(workdir, 'report.html')} (and report.md)", flush=True)
    if refused:
        raise SymmetryRefusal(f"{symmetry.measured}. {symmetry.advice}")
    return out


def _train(config, workdir, dataset, monitor: TrainingMonitor, allow_config_change: bool) -> dict[str, Any]:
    try:
        summary = train_and_evaluate(config, workdir, dataset=dataset, monitor=monitor,
                                     allow_config_change=allow_config_change)
    except NonFiniteLossError as err:
        step = monitor.history.train[-1]["step"] if monitor.history.train else 0
        verdict = Verdict(
            "loss_exploding", "loss exploding (NaN)", step, "a non-finite loss", "a finite loss",
            "The learning rate is too large: lower optimizer.learning_rate, add schedule.warmup_epochs or "
            "optimizer.grad_clip_norm. Training was stopped.", stop=True)
        monitor.tracker.add(verdict)
        return {"status": "non_finite", "error": str(err)}
    keys = ("status", "steps", "train/loss", "train/accuracy", "val/accuracy", "val/loss", "eval/accuracy",
            "eval/loss", "wall_time_s", "compile_s")
    return {k: summary[k] for k in keys if k in summary}


def monitored_run(config: ml_collections.ConfigDict, workdir: str, **kwargs) -> dict[str, Any]:
    """Trains with monitors on and writes the report, without the pre-flight checks.

    What `--mode=train` does when `config.monitor.every > 0`; keyword arguments
    are those of `babysit`.
    """
    return babysit(config, workdir, train=True, checks=(), **kwargs)
