"""`train_and_evaluate(config, workdir)`: one model, trained end to end.

Order of work: validate the config, load the data, check the workdir, and only
then compile and write. Outputs in the workdir: `config.json`, `metrics.jsonl`,
`summary.json`, `checkpoints/`, TensorBoard event files.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.models import get_model
from cnnjax.training import config as config_lib
from cnnjax.training import files, sharding
from cnnjax.training.checkpoint import Checkpointer
from cnnjax.training.feeds import CALL_SECONDS, STEPS_PER_CALL, InMemoryFeed, StreamingFeed, member_keys
from cnnjax.training.loop import Schedule, progress_bar, run_loop
from cnnjax.training.optim import optimizer_from_config
from cnnjax.training.profiling import StepProfiler
from cnnjax.training.run_data import write_data_info
from cnnjax.training.state import count_params, create_train_state
from cnnjax.training.writers import MetricWriter, read_metrics, truncate_metrics, write_json


class WorkdirConfigMismatchError(RuntimeError):
    """The workdir holds a run of a different config."""


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


def config_as_json(config: ml_collections.ConfigDict) -> dict:
    # Round trip through JSON so tuples/lists compare equal to a file's contents.
    return json.loads(config.to_json_best_effort(sort_keys=True))


def check_workdir(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool) -> None:
    """Refuses a workdir whose `config.json` differs from `config`."""
    path = os.path.join(workdir, "config.json")
    if allow_config_change or not files.exists(path):
        return
    old = json.loads(files.read_text(path))
    diffs = config_lib.config_diff(old, config_as_json(config))
    if diffs:
        raise WorkdirConfigMismatchError(
            f"{workdir} holds a run with a different config:\n  "
            + "\n  ".join(diffs)
            + "\nUse a new --workdir, or pass --allow_config_change to resume this run with the new config."
        )


def build_model(config: ml_collections.ConfigDict, num_classes: int):
    return get_model(config.model.name, num_classes, **config_lib.model_overrides(config))


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    allow_config_change: bool = False,
    stop_after_steps: int | None = None,
    dataset=None,
    monitor=None,
) -> dict[str, Any]:
    """Trains `config.model` on `config.data`, evaluating and checkpointing.

    Running again with the same workdir resumes from the latest checkpoint (step,
    rng and data order included), so a finished resumed run equals an
    uninterrupted one.

    Args:
      config: a config built on `cnnjax.config.base_config()`.
      workdir: output directory (created if needed).
      allow_config_change: resume even if the workdir's `config.json` differs.
      stop_after_steps: stop (with a checkpoint) once this global step is
        reached, as a preemption would; the run can be resumed later.
      dataset: an already loaded `cnnjax.data.Dataset` (skips loading).
      monitor: optional training monitor (`cnnjax.diagnostics.TrainingMonitor`):
        every `monitor.every` steps the step runs with `monitor.step_monitor`
        (its `monitor/*` metrics are logged at that step); `monitor.start(state,
        total_steps)`, `monitor.log(step, state, means, monitored)` (returns a
        reason to stop early, or None), `monitor.evaluate(step, val)` (returns
        metrics to log) and `monitor.finish(summary)` are called around the loop.

    Returns:
      The summary dict (also written to `workdir/summary.json`); for a stopped
      run, the partial summary with `status` 'interrupted'.
    """
    start_time = time.time()
    config_lib.validate_training(config)
    try:
        mesh = sharding.data_mesh(config.mesh.data)
    except sharding.MeshError as err:
        raise config_lib.ConfigError(f"Invalid config:\n  - {err}") from None
    if mesh is not None and config.batch_size % mesh.size:
        raise config_lib.ConfigError(
            f"Invalid config:\n  - batch_size={config.batch_size} does not split over mesh.data={mesh.size} "
            f"devices; use a multiple of {mesh.size}"
        )
    # Process 0 writes the outputs; every process trains and joins checkpoints.
    primary = jax.process_index() == 0
    feed = None
    if config.data.streaming:
        # Sizes and statistics only; each process streams its own share later.
        feed_info = StreamingFeed(config, mesh, start_step=0)
        num_train, num_classes, image_shape = feed_info.num_train_examples, feed_info.num_classes, feed_info.image_shape
    else:
        if dataset is None:
            dataset = load_dataset_once(config)
        num_train, num_classes, image_shape = dataset.train.num_examples, dataset.num_classes, dataset.image_shape
    data_done = time.time()
    config_lib.validate_against_data(config, num_train)
    check_workdir(config, workdir, allow_config_change)
    model = build_model(config, num_classes)

    schedule = Schedule.from_config(config, num_train)
    steps_per_epoch, total_steps = schedule.steps_per_epoch, schedule.total_steps
    tx = optimizer_from_config(config, steps_per_epoch, total_steps)
    init_key, data_key = member_keys(config.seed, config.get("data_seed"))
    # One compiled program, optimiser state included: run eagerly, each op of the
    # init compiles on its own (seconds of start-up on a CPU).
    state = jax.jit(functools.partial(
        create_train_state,
        model,
        tx,
        input_shape=tuple(image_shape),
        l2=config.loss.l2,
        l1=config.loss.l1,
        label_smoothing=config.loss.label_smoothing,
        precision=config.precision,
        ema_decay=config.optimizer.ema_decay,
    ))(init_key)
    num_params = count_params(state.params)
    # Replicated over the mesh before a restore, so the checkpoint lands in place.
    state = sharding.replicate(state, mesh)

    if primary:
        files.makedirs(workdir)
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    if checkpointer.latest_step() is not None:
        state = checkpointer.restore(state)
        logging.info("Resumed from %s at step %d.", checkpointer.directory, int(state.step))
        print(f"Resuming from step {int(state.step)} of {total_steps} ({checkpointer.directory}).", flush=True)
    if primary:  # records past the restored step (all, with no checkpoint) are logged again
        truncate_metrics(workdir, int(state.step))
    if primary:
        write_json(os.path.join(workdir, "config.json"), config_as_json(config))
    writer = MetricWriter(workdir, tensorboard=config.tensorboard) if primary else _NullWriter()

    if config.data.streaming:
        feed = StreamingFeed(config, mesh, start_step=int(state.step))
    else:
        feed = InMemoryFeed(config, dataset, mesh, sharding.replicate(data_key, mesh))
    if primary:  # class names and normalisation, for --mode=eval/predict/export
        write_data_info(workdir, feed, dataset)
    task = _RunTask(config, feed, writer, checkpointer, schedule, monitor)
    task.profiler = StepProfiler(config.profile_steps if primary else "", workdir)
    if monitor is not None:
        monitor.start(state, total_steps)

    step = int(state.step)
    bar = progress_bar(total_steps, step, config.progress_bar and primary)
    task.bar = bar
    loop_start = time.time()
    try:
        result = run_loop(task, state, step, total_steps, schedule, stop_at=stop_after_steps, bar=bar)
        state, step = result.state, result.step
        # Where the wall time went (seconds), for `experiments/benchmarks/end_to_end.py`.
        times = {"data": data_done - start_time, "setup": loop_start - data_done,
                 "compile": result.first_step_s or 0.0, "eval": task.eval_s, "checkpoint": task.checkpoint_s}
        times["train"] = time.time() - loop_start - sum(times[k] for k in ("compile", "eval", "checkpoint"))
        status = "completed"
        if result.early:
            print(f"Stopped early at step {step}: {result.stopped}", flush=True)
            status = "stopped_early"
        elif result.stopped:
            bar.close()
            logging.warning("Stopped at step %d (%s); checkpoint saved.", step, result.stopped)
            print(f"Stopped at step {step} ({result.stopped}); checkpoint saved in "
                  f"{checkpointer.directory}. Run the same command again to resume.", flush=True)
            status = "interrupted"
        bar.close()
        summary: dict[str, Any] = {
            "status": status,
            "steps": step,
            "epochs": step / steps_per_epoch,
            "num_params": num_params,
            "model": config.model.name,
            "dataset": feed.name,
        }
        if result.first_step_s is not None:
            summary["compile_s"] = result.first_step_s
        if status == "interrupted":
            summary.update(task.last_means)
            summary.update(_skipped_summary(feed))
            return summary
        t = time.time()
        checkpointer.save(state)
        times["checkpoint"] += time.time() - t
        summary.update(task.last_means or _previous_train_metrics(workdir))
        t = time.time()
        for name in feed.eval_splits:
            result = feed.evaluate(state, name)
            summary.update({f"{name}/{k}": v for k, v in result.items()})
            task.first_eval_s = task.first_eval_s or time.time() - t
        times["eval"] += time.time() - t
        summary.update(_skipped_summary(feed))  # after the evaluations: a stream meets files as it reads them
        writer.write(step, {k: v for k, v in summary.items() if k.startswith(("val/", "eval/"))})
        if monitor is not None:
            monitor.finish(summary)
        summary.update({f"time/{k}_s": round(v, 3) for k, v in times.items()})
        if task.first_eval_s is not None:  # part of time/eval_s
            summary["time/first_eval_s"] = round(task.first_eval_s, 3)
        summary["wall_time_s"] = time.time() - start_time
        if primary:
            write_json(os.path.join(workdir, "summary.json"), summary)
        return summary
    finally:
        task.profiler.close(state)
        bar.close()
        writer.close()
        checkpointer.close()
        if feed is not None:
            feed.close()


def _skipped_summary(feed) -> dict[str, Any]:
    """data.bad_images=skip: how many image files were left out, and the first few."""
    skipped = feed.skipped_images
    return {"data/skipped_images": len(skipped), "data/skipped_first": list(skipped[:5])} if skipped else {}


_UNTRACED = object()


class _RunTask:
    """The single run as a `LoopTask`: one jitted step, means logged, NaN stops the run."""

    def __init__(self, config, feed, writer, checkpointer, schedule: Schedule, monitor):
        self.config, self.feed, self.writer, self.checkpointer = config, feed, writer, checkpointer
        self.schedule, self.monitor = schedule, monitor
        self.jit_step = feed.make_step()
        self.jit_steps = _UNTRACED  # `feed.make_steps` at the first step: calls of several steps, or None
        self.per_call = 1  # steps a call may run, from the last flush's steps per second
        self.jit_monitored = feed.make_step(monitor.step_monitor) if monitor is not None else None
        self.monitored: list[tuple[int, dict[str, jax.Array]]] = []
        self.monitor_stop: str | None = None
        self.last_finite: dict[str, float] = {}
        self.last_means: dict[str, float] = {}
        self.interval_start = time.time()
        self.bar = None
        self.profiler = None
        self.eval_s = self.checkpoint_s = 0.0  # wall time inside evaluate / checkpoint
        self.first_eval_s: float | None = None  # the first evaluation, its compile included

    def max_steps(self, step) -> int:
        """Steps one call may run from `step`: about `CALL_SECONDS` of them, within the epoch, up to a monitored step or the profile window's edge."""
        if self.jit_steps is None:
            return 1
        limits = [self.per_call, self.schedule.steps_per_epoch - step % self.schedule.steps_per_epoch]
        if self.monitor is not None:
            limits.append(-step % self.monitor.every or 1)  # a monitored step runs alone
        if (edge := self.profiler.steps_before_change(step)) is not None:
            limits.append(edge)
        return min(limits)

    def step(self, state, step, count=1):
        self.profiler.at(step, state)
        args = self.feed.step_args(step)
        if self.jit_steps is _UNTRACED:
            self.jit_steps = self.feed.make_steps(state, args)
        if self.monitor is not None and step % self.monitor.every == 0:
            state, metrics = self.jit_monitored(state, *args)
            metrics = dict(metrics)
            self.monitored.append((step + 1, {k: metrics.pop(k) for k in list(metrics) if k.startswith("monitor/")}))
            return state, metrics
        if self.jit_steps is None:
            return self.jit_step(state, *args)
        state, rows = self.jit_steps(state, *args, count)
        return state, (count, rows)

    def flush(self, state, step, pending) -> None:
        """Brings the pending step metrics to the host, checks them, logs means."""
        values = []
        for metrics in jax.device_get(pending):  # a call of `count` steps: (count, stacked rows)
            if isinstance(metrics, tuple):
                count, rows = metrics
                values += [{k: v[i] for k, v in rows.items()} for i in range(count)]
            else:
                values.append(metrics)
        first_step = step - len(values) + 1
        for offset, m in enumerate(values):
            if not (m["finite"] > 0 and math.isfinite(float(m["loss"]))):
                bad = first_step + offset
                good = "\n  ".join(f"{k}: {v:.6g}" for k, v in sorted(self.last_finite.items())) or "(none logged yet)"
                raise NonFiniteLossError(
                    f"Non-finite loss at step {bad} (loss={float(m['loss'])}). "
                    f"Last finite metrics (step {bad - 1}):\n  {good}\n"
                    f"The last good checkpoint is kept in {self.checkpointer.directory}. Lower "
                    "optimizer.learning_rate, add schedule.warmup_epochs or optimizer.grad_clip_norm."
                )
            self.last_finite = {k: float(v) for k, v in m.items() if k != "finite"}
        elapsed = max(time.time() - self.interval_start, 1e-9)
        means = {f"train/{k}": float(np.mean([m[k] for m in values])) for k in values[0] if k != "finite"}
        means["train/steps_per_sec"] = len(values) / elapsed
        self.per_call = max(1, min(STEPS_PER_CALL, int(CALL_SECONDS * len(values) / elapsed)))
        means["train/examples_per_sec"] = len(values) * self.config.batch_size / elapsed
        means["train/epoch"] = step / self.schedule.steps_per_epoch
        self.writer.write(step, means)
        if self.monitor is not None:
            host = [(s, jax.device_get(m)) for s, m in self.monitored]
            for s, m in host:
                self.writer.write(s, m)
            self.monitor_stop = self.monitor.log(step, state, means, host) or self.monitor_stop
            self.monitored = []
        self.last_means = means
        self.bar.set_postfix(
            loss=f"{means['train/loss']:.4f}",
            acc=f"{means['train/accuracy']:.3f}",
            img_s=f"{means['train/examples_per_sec']:.0f}",
            refresh=False,
        )
        self.interval_start = time.time()

    def evaluate(self, state, step) -> None:
        if "val" not in self.feed.eval_splits:
            return
        start = time.time()
        val = self.feed.evaluate(state, "val")
        self.eval_s += time.time() - start
        self.first_eval_s = self.first_eval_s or time.time() - start
        self.writer.write(step, {f"val/{k}": v for k, v in val.items()})
        if self.monitor is not None:
            self.writer.write(step, self.monitor.evaluate(step, val))
        self.bar.set_description(f"val acc {val['accuracy']:.4f}", refresh=False)

    def checkpoint(self, state, step) -> None:
        self.writer.flush()  # the log holds every record up to the checkpoint (in a bucket it is buffered)
        start = time.time()
        self.checkpointer.save(state)
        self.checkpoint_s += time.time() - start

    def early_stop(self) -> str | None:
        return self.monitor_stop


def load_dataset_once(config: ml_collections.ConfigDict):
    """Loads the data set; with several processes, process 0 prepares it first.

    (TFDS preparation is not safe to run from two processes into one data_dir.)
    """
    from cnnjax.data import load_dataset

    if jax.process_count() == 1:
        return load_dataset(config.data)
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        dataset = load_dataset(config.data)
        multihost_utils.sync_global_devices("cnnjax: data set prepared")
        return dataset
    multihost_utils.sync_global_devices("cnnjax: data set prepared")
    return load_dataset(config.data)


class _NullWriter:
    """The metric writer of a process other than 0: writes nothing."""

    def write(self, step, metrics) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _previous_train_metrics(workdir: str) -> dict[str, float]:
    """The last logged train/* means (a finished run resumed with nothing left to do)."""
    found: dict[str, float] = {}
    for record in read_metrics(workdir):
        found.update({k: v for k, v in record.items() if k.startswith("train/")})
    return found
