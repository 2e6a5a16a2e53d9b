"""Sweep checkpoints: a strategy as a deterministic program of phases.

Every strategy trains through `Phases.train`, one call per population
training (a group, a round, a rung, a PBT interval): phase 0, 1, 2... in an
order that depends only on the config and on the records the earlier phases
left. A checkpoint holds the phase index, the step within it, the whole
population (stacked train states with their per-member hyperparameters and
rngs, data keys, alive flags) and, in the same atomic orbax checkpoint, a JSON
item with every member record, the records each completed phase left, and the
execution plan chosen per population size. It is written every
`checkpoint_every_steps` and at the end of every phase.

On resume the strategy runs again from the start; completed phases are
replayed without training (their records are put back), so its choices
(survivors, narrowed ranges, PBT draws) repeat exactly; the phase in progress
restores its population and continues. A finished resumed sweep therefore
equals an uninterrupted one bit for bit (on one device kind).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import ml_collections
from absl import logging

from cnnjax.training.checkpoint import Checkpointer
from cnnjax.training.config import config_diff
from cnnjax.training.writers import rewrite_metrics
from cnnjax.tuning import plans as plans_lib
from cnnjax.tuning.best import keep_candidates
from cnnjax.tuning.runner import MemberRecord, grow_total

# Sweep keys that may not change under a resumed sweep, even with --allow_config_change
# (they decide which members exist and what each phase trains).
_FIXED_SWEEP_KEYS_EXCEPT = ("plan", "chunk_size", "mesh_devices", "keep_best")


class SweepInterrupted(Exception):
    """The sweep stopped (signal or `stop_after_steps`) after saving a checkpoint."""


class SweepResumeError(ValueError):
    """The workdir's sweep checkpoint belongs to a different sweep."""


def sweep_block(config: ml_collections.ConfigDict) -> dict[str, Any]:
    block = json.loads(config.sweep.to_json_best_effort(sort_keys=True))
    return {k: v for k, v in block.items() if k not in _FIXED_SWEEP_KEYS_EXCEPT}


def truncate_sweep_metrics(workdir: str, phase: int, step: int) -> None:
    """Drops records written after (phase, step) and a torn last line."""
    rewrite_metrics(workdir, lambda r: r.get("phase", -1) < phase
                    or (r.get("phase", -1) == phase and r.get("step", 0) <= step))


def _skip(bar, units: int) -> None:
    """Moves a progress bar past work done before a resume without counting it in the rate (and ETA)."""
    bar.n += units
    bar.last_print_n = bar.n
    bar.refresh()


def _plan_key(config: ml_collections.ConfigDict) -> str:
    return hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


class Phases:
    """Numbers the phases of a sweep, checkpoints them and replays them on resume."""

    def __init__(self, sweep, workdir: str | None, keep: int, stop_after_steps: int | None = None, stop=None):
        self.sweep = sweep
        self.checkpointer = Checkpointer(workdir, keep=keep) if workdir else None
        self.stop_after_steps, self.stop = stop_after_steps, stop
        self.phase = 0  # index of the next phase
        self.global_done = 0  # steps of the completed phases
        self.phase_records: list[dict[str, dict]] = []
        self.resume: tuple[int, dict[str, Any]] | None = None
        self.chosen_plans: dict[str, dict[str, list]] = {}
        self.label = ""

    # -- resume ---------------------------------------------------------------
    def load(self, config: ml_collections.ConfigDict) -> dict[str, Any] | None:
        """Reads the latest readable checkpoint; refuses one of a different sweep. Returns its meta."""
        if self.checkpointer is None:
            return None
        found = self.checkpointer.read_meta()
        if found is None:
            return None
        step, meta = found
        diffs = config_diff(meta["sweep"], sweep_block(config), "sweep.")
        if diffs:
            raise SweepResumeError(
                f"{self.checkpointer.directory} holds a checkpoint of a different sweep:\n  " + "\n  ".join(diffs)
                + "\nA sweep resumes only with the same population, strategy and space; use a new --workdir.")
        self.resume = (step, meta)
        self.phase_records = meta["phase_records"]
        self.chosen_plans = meta["plans"]
        return meta

    def forced_plans(self, group_config) -> dict[int, plans_lib.Plan]:
        saved = self.chosen_plans.get(_plan_key(group_config), {})
        return {int(size): plans_lib.Plan(name, chunk) for size, (name, chunk) in saved.items()}

    # -- phases ---------------------------------------------------------------
    def train(self, trainer, pop, num_steps: int, eval_every: int | None, label: str = ""):
        """Trains phase `self.phase` (or replays / resumes it); returns the population at its end."""
        sweep, phase = self.sweep, self.phase
        self.phase += 1
        start, end = pop.step, pop.step + num_steps
        bar, self.label = sweep.progress, label
        if bar is not None and not getattr(bar, "disable", True):
            bar.set_description(label, refresh=False)
        if self.resume is not None and phase < self.resume[1]["phase"]:
            for member, rec in self.phase_records[phase].items():  # completed earlier: replay
                sweep.records[int(member)] = MemberRecord(**rec)
            self.global_done += num_steps
            if bar is not None:
                grow_total(bar, num_steps * pop.size)
                _skip(bar, num_steps * pop.size)
            return dataclasses.replace(pop, step=end)
        if self.resume is not None:  # the phase the checkpoint is in
            pop = self._restore(trainer.restore_target(pop), phase, start)
            if bar is not None:
                grow_total(bar, (pop.step - start) * pop.size)
                _skip(bar, (pop.step - start) * pop.size)
        trainer.log_fields = {"phase": phase}
        if len(self.phase_records) == phase:  # not finished (a phase of 0 steps still evaluates)
            stop_at = None
            if self.stop_after_steps is not None:
                stop_at = start + self.stop_after_steps - self.global_done
                stop_at = stop_at if pop.step < stop_at < end else None

            def checkpoint(p):
                if p.step < end:  # the end of the phase is saved below, with its records
                    self.save(trainer, p, phase, start)

            pop = trainer.train(pop, end - pop.step, eval_every, checkpoint=checkpoint, stop_at=stop_at,
                                stop=self.stop)
            if trainer.stopped and pop.step < end:
                why = self.stop.signal_name if self.stop is not None and self.stop.signal_name else None
                raise SweepInterrupted(f"phase {phase} ({label}) step {pop.step}: "
                                       f"{why or f'stop_after_steps={self.stop_after_steps}'}")
            keep_candidates(sweep, pop)
            self.phase_records.append({str(m): dataclasses.asdict(sweep.records[m]) for m in pop.ids})
            self.save(trainer, pop, phase, start)
        self.global_done += num_steps
        signalled = self.stop is not None and self.stop.signal_name
        if signalled or (self.stop_after_steps is not None and self.global_done == self.stop_after_steps):
            raise SweepInterrupted(f"end of phase {phase} ({label}): {signalled or 'stop_after_steps'}")
        return pop

    def save(self, trainer, pop, phase: int, start: int) -> None:
        if self.checkpointer is None:
            return
        sweep = self.sweep
        sizes = self.chosen_plans.setdefault(_plan_key(trainer.config), {})
        for size, (plan, _) in trainer._compiled.items():
            sizes[str(size)] = [plan.name, plan.chunk_size]
        meta = {
            "phase": phase, "phase_start": start, "step": pop.step, "ids": list(pop.ids),
            "global_step": self.global_done + pop.step - start,
            "records": {str(m): dataclasses.asdict(r) for m, r in sweep.records.items()},
            "phase_records": self.phase_records, "plans": self.chosen_plans,
            "plans_used": sweep.plans_used + sweep.pending_plans(trainer, trainer.group),
            "sweep": sweep_block(sweep.config),
            "label": self.label,
        }
        pop = trainer.unpadded(pop)  # the members only: a resume may spread them over another mesh
        tree = {"state": pop.state, "alive": pop.alive, "data_keys": pop.data_keys}
        if getattr(sweep, "writer", None) is not None:
            sweep.writer.flush()  # the log holds every record up to the checkpoint (in a bucket it is buffered)
        # Orbax steps count the sweep's steps so far (+ phase, so a 0-step phase boundary gets its own).
        self.checkpointer.save(tree, step=meta["global_step"] * 1000 + phase % 1000, meta=meta)

    def _restore(self, pop, phase: int, start: int):
        step, meta = self.resume
        self.resume = None
        if meta["ids"] != list(pop.ids) or meta["phase_start"] != start:
            raise SweepResumeError(f"checkpoint {step} does not match phase {phase} of this sweep "
                                   f"(members {meta['ids']} vs {list(pop.ids)})")
        tree = {"state": pop.state, "alive": pop.alive, "data_keys": pop.data_keys}
        tree, _ = self.checkpointer.restore(tree, step=step, with_meta=True)
        sweep = self.sweep
        sweep.records.clear()
        sweep.records.update({int(m): MemberRecord(**r) for m, r in meta["records"].items()})
        sweep.plans_used[:] = meta["plans_used"]
        message = (f"Resuming the sweep at phase {phase} ({meta['label'] or 'population'}), step "
                   f"{meta['step']} (steps {start}..{meta['step']} of this phase done, {phase} earlier "
                   f"phases replayed from the checkpoint).")
        logging.warning(message)
        print(message, flush=True)
        return dataclasses.replace(pop, state=tree["state"], alive=tree["alive"], data_keys=tree["data_keys"],
                                   step=meta["step"])

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
