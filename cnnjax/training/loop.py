"""The one training loop: a single run, a population, a round of a strategy.

`run_loop` owns the skeleton every kind of training shares: stepping (one
call may run several steps, `LoopTask.max_steps`, up to the next event), the
buffer of on-device step metrics and its flush every `log_every_steps`, the
evaluation and checkpoint cadence, SIGTERM / Ctrl-C (checkpoint, then stop),
a stop at a given step (as a preemption would) and the progress bar. What
differs lives in a `LoopTask`: how one step runs, what a flush does with the
metrics (log, check for non-finite values), how to evaluate and checkpoint.

`Schedule.from_config` is the one place that turns a config into steps per
epoch, total steps and the evaluation cadence.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import Any, Protocol

import ml_collections


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Steps per epoch, total steps and the cadence of a run of `config`."""

    steps_per_epoch: int
    total_steps: int
    eval_every_steps: int | None  # None: evaluate at the end only
    log_every_steps: int
    checkpoint_every_steps: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, num_train_examples: int) -> Schedule:
        steps_per_epoch = num_train_examples // config.batch_size
        every = config.eval_every_epochs
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=int(steps_per_epoch * config.num_epochs),
            eval_every_steps=max(1, int(every * steps_per_epoch)) if every else None,
            log_every_steps=config.log_every_steps,
            checkpoint_every_steps=config.checkpoint_every_steps,
        )


class LoopTask(Protocol):
    """What `run_loop` trains: one run or a population."""

    def max_steps(self, step: int) -> int:
        """How many steps (1 or more) one call of `step` may run from step `step`."""

    def step(self, state: Any, step: int, count: int) -> tuple[Any, Any]:
        """Runs steps `step` .. `step + count - 1` (0-based); returns (new state, on-device metrics)."""

    def flush(self, state: Any, step: int, pending: list[Any]) -> None:
        """Brings `pending` (the metrics of steps step-len+1 .. step) to the host and logs them."""

    def evaluate(self, state: Any, step: int) -> None:
        """Evaluates in the middle of training (the end is the caller's)."""

    def checkpoint(self, state: Any, step: int) -> None:
        """Saves `state` at `step` so that a later run resumes from it."""

    def early_stop(self) -> str | None:
        """A reason to stop before the end (a monitor's verdict), or None."""


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def progress_bar(total: int | None, initial: int, enabled: bool, unit: str = "step"):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, dynamic_ncols=True)


@dataclasses.dataclass
class LoopResult:
    state: Any
    step: int
    stopped: str | None = None  # why the loop ended before `end` (a signal, stop_at, a monitor)
    early: bool = False  # stopped by the task's `early_stop` (not a preemption)
    first_step_s: float | None = None  # wall time of the first step (its compile included)


def run_loop(task: LoopTask, state: Any, start: int, end: int, schedule: Schedule, *,
             eval_at_end: bool = False, stop_at: int | None = None, bar=None, units_per_step: int = 1,
             stop: StopRequest | None = None) -> LoopResult:
    """Advances `state` from step `start` to `end` (or until stopped).

    Metrics are flushed every `schedule.log_every_steps`, at `end` and before
    an evaluation or a checkpoint; evaluations run every
    `schedule.eval_every_steps` before `end` (and at `end` with `eval_at_end`);
    checkpoints every `schedule.checkpoint_every_steps` and when stopping. A
    stop (signal or `stop_at`) checkpoints and returns with `stopped` set.
    """
    pending: list[Any] = []
    step = start
    result = LoopResult(state, step)
    own = stop is None
    stop = stop or StopRequest()

    def flush():
        nonlocal pending
        if pending:
            task.flush(state, step, pending)
            pending = []

    with stop if own else _nothing():
        while step < end:
            t0 = time.time() if result.first_step_s is None else None
            # A call runs up to the next flush, evaluation, checkpoint or stop, so each lands after its step.
            count = 1 if t0 is not None else min(
                task.max_steps(step), end - step, *(_to_next(step, every) for every in (
                    schedule.log_every_steps, schedule.eval_every_steps, schedule.checkpoint_every_steps)),
                *((stop_at - step,) if stop_at is not None and stop_at > step else ()))
            state, metrics = task.step(state, step, count)
            if t0 is not None:
                import jax

                jax.block_until_ready(metrics)
                result.first_step_s = time.time() - t0
            pending.append(metrics)
            step += count
            if bar is not None:
                bar.update(units_per_step * count)
            # A stop that lands on the last step is the normal end: the evaluation at `end` still runs
            # (a sweep phase recorded without it would lose its members' scores); the caller sees the signal.
            stopping = (stop.signal_name is not None or step == stop_at) and step < end
            if step % schedule.log_every_steps == 0 or step == end or stopping:
                flush()
            reason = task.early_stop()
            every = schedule.eval_every_steps
            if every and step % every == 0 and (step < end or eval_at_end):
                flush()
                task.evaluate(state, step)
            if step % schedule.checkpoint_every_steps == 0 or stopping or reason:
                flush()
                task.checkpoint(state, step)
            if reason:
                return dataclasses.replace(result, state=state, step=step, stopped=reason, early=True)
            if stopping:
                why = stop.signal_name or f"stop_after_steps={stop_at}"
                return dataclasses.replace(result, state=state, step=step, stopped=why)
        flush()
        if eval_at_end and (not schedule.eval_every_steps or step % schedule.eval_every_steps):
            task.evaluate(state, step)
    return dataclasses.replace(result, state=state, step=step)


def _to_next(step: int, every: int | None) -> int:
    """Steps from `step` to the next multiple of `every` (never: a large number)."""
    return every - step % every if every else 1 << 62


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass
