"""What the strategies share: the sweep's data, records, log, phases; training a set of members.

`Sweep` holds the state of one sweep; `train_groups` trains members split into
static groups, one population (phase) per group; `train_members` is the library
entry point that trains exactly the given members.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from cnnjax.training import config as config_lib
from cnnjax.training import files, sharding
from cnnjax.training.loop import Schedule
from cnnjax.training.profiling import StepProfiler
from cnnjax.training.writers import MetricWriter
from cnnjax.tuning import space as space_lib
from cnnjax.tuning.population import init_population, member_config
from cnnjax.tuning.resume import Phases, truncate_sweep_metrics
from cnnjax.tuning.runner import MemberRecord, PopulationTrainer


class SweepError(ValueError):
    """A sweep config that cannot run; raised before any compile or write."""



class Sweep:
    """State shared by the strategies: data, records, writer, progress.

    With several processes every one runs the same strategy on the same records
    (host values are gathered from all of them); only process 0 (`primary`)
    writes the log, and the study lives there.
    """

    def __init__(self, config, dataset, workdir, space, progress, stop_after_steps=None, stop=None,
                 checkpoints: bool = False, open_study=None):
        self.config = config
        self.dataset = dataset
        self.workdir = workdir
        self.space = space
        self.records: dict[int, MemberRecord] = {}
        self.warnings: list[str] = []
        self.progress = progress
        self.plans_used: list[dict[str, Any]] = []
        self.next_id = 0
        self.trainers: dict[str, PopulationTrainer] = {}
        self.mesh = member_mesh(config.sweep.mesh_devices)
        self.primary = sharding.is_primary()
        self.phases = Phases(self, workdir if checkpoints else None, config.keep_checkpoints, stop_after_steps, stop)
        self.study = None
        if checkpoints:
            # Before the log opens: a checkpoint of another sweep is refused with nothing written.
            meta = self.phases.load(config)
            # The study next: a storage that cannot be opened is refused before the log is touched.
            self.study = self._open_study(open_study) if open_study is not None else None
            if self.primary:  # no checkpoint yet: the sweep starts over, so its log does too
                truncate_sweep_metrics(workdir, meta["phase"] if meta else -1, meta["step"] if meta else -1)
        self.writer = MetricWriter(workdir, tensorboard=False) if workdir and self.primary else None
        # One trace for the whole sweep, by process 0 (as a single run's).
        self.profiler = StepProfiler(config.get("profile_steps", "") if workdir and self.primary else "", workdir)

    def _open_study(self, open_study):
        """The study, opened by process 0; the others raise its error too (instead of waiting for it)."""
        study, error = None, None
        if self.primary:
            try:
                study = open_study()
            except Exception as err:  # noqa: BLE001 (re-raised below, after the others have heard of it)
                error = err
        failed = sharding.from_process_0(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if failed is not None:
            raise SweepError(f"process 0 could not open the sweep's study: {failed}")
        return study

    def new_records(self, members: list[dict[str, Any]], round_index: int = 0) -> list[int]:
        ids = []
        for values in members:
            self.records[self.next_id] = MemberRecord(self.next_id, dict(values), extra={"round": round_index})
            ids.append(self.next_id)
            self.next_id += 1
        return ids

    def trainer(self, group_config) -> PopulationTrainer:
        """The group's trainer; one per group config, so later rounds reuse its compiled steps."""
        key = group_config.to_json_best_effort(sort_keys=True)
        if key not in self.trainers:
            self.trainers[key] = PopulationTrainer(
                group_config, self.dataset, self.records, writer=self.writer, plan=self.config.sweep.plan,
                chunk_size=self.config.sweep.chunk_size, shared_batches=self.config.sweep.shared_batches,
                mesh=self.mesh, progress=self.progress, profiler=self.profiler,
            )
            self.trainers[key].forced_plans = self.phases.forced_plans(group_config)
            self.trainers[key].group = {}
        return self.trainers[key]

    def group(self, static: dict[str, Any], members: list[dict[str, Any]], ids: list[int], idx: list[int]):
        """(config, population, trainer) of the static group `static`: `members[i]` for i in `idx`."""
        group_config = member_config(self.config, static)
        pop = self.population(group_config, [members[i] for i in idx], [ids[i] for i in idx])
        trainer = self.trainer(group_config)
        trainer.group = static
        return group_config, pop, trainer

    def population(self, group_config, members, ids):
        pop = init_population(group_config, [traced_values(m) for m in members], self.dataset.num_classes,
                              self.dataset.image_shape, self.dataset.train.num_examples,
                              shared_batches=self.config.sweep.shared_batches)
        return dataclasses.replace(pop, ids=list(ids))

    def note_plans(self, trainer: PopulationTrainer, group: dict[str, Any]) -> None:
        """Moves the plans the trainer measured into the sweep's report."""
        self.plans_used += self.pending_plans(trainer, group)
        trainer.trials = []

    @staticmethod
    def pending_plans(trainer: PopulationTrainer, group: dict[str, Any]) -> list[dict[str, Any]]:
        """The trainer's measured plans not yet noted (a checkpoint keeps them too, so a resume reports them)."""
        return [{"group": group, "plan": str(t.plan), "step_ms": t.step_ms,
                 "memory_mib": None if t.memory_bytes is None else t.memory_bytes / 2**20,
                 "fits": t.fits, "picked": t.picked} for t in trainer.trials]


def traced_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in space_lib.TRACED_PATHS}


def member_mesh(mesh_devices: int):
    """The `member` mesh (every device of every process with several processes), or None for one device."""
    devices = jax.devices()
    count = len(devices) if mesh_devices == 0 else mesh_devices
    if jax.process_count() > 1 and count != len(devices):
        raise SweepError(f"sweep.mesh_devices={mesh_devices} with {jax.process_count()} processes "
                         f"({len(devices)} devices in all): a multi-process sweep spreads its members over "
                         "every device; use sweep.mesh_devices=0")
    if count <= 1:
        return None
    if count > len(devices):
        raise SweepError(f"sweep.mesh_devices={count} but only {len(devices)} devices are visible")
    from jax.sharding import Mesh

    return Mesh(np.asarray(devices[:count]), ("member",))


def group_members(members):
    return space_lib.split_static(members)


def train_groups(sweep: Sweep, members: list[dict[str, Any]], ids: list[int], label: str = ""):
    """Trains members (split into static groups) for the whole budget."""
    groups = group_members(members)
    for g, (static, idx) in enumerate(groups):
        group_config, pop, trainer = sweep.group(static, members, ids, idx)
        every = Schedule.from_config(group_config, sweep.dataset.train.num_examples).eval_every_steps
        where = ", ".join(filter(None, [label, f"group {g + 1}/{len(groups)}" if len(groups) > 1 else ""]))
        sweep.phases.train(trainer, pop, pop.total_steps, every, where or f"{pop.size} members")
        sweep.note_plans(trainer, static)


def train_members(config: ml_collections.ConfigDict, members: list[dict[str, Any]], *, dataset=None,
                  workdir: str | None = None, progress: bool = False, plan: str | None = None) -> list[MemberRecord]:
    """Trains exactly `members` (each a dict of config path -> value) and returns their records.

    The library entry point for experiments: values that change shapes or code
    (`model.name`, `optimizer.name`, `model.pooling`...) split the members into
    groups, each trained as one population, one group after another; traced
    values (learning rate, weight decay, seeds...) vary within a population.
    Every member's config is validated before anything compiles. With a
    `workdir`, member curves go to `workdir/metrics.jsonl`. Records come back in
    the order of `members`, with `train_history` and `val_history` filled.
    """
    if not members:
        raise SweepError("train_members needs at least one member")
    errors = []
    for i, values in enumerate(members):
        try:
            # Model options are checked by validate_training against the member's model.
            for path in values:
                if not path.startswith("model.") and not _has_path(config, path):
                    raise space_lib.SpaceError(f"the config has no key {path!r}")
            member = member_config(config, values)
            space_lib.check_paths({p: None for p in values if p.startswith("optimizer.") and p != "optimizer.name"},
                                  member)
            config_lib.validate_training(member)
        except (space_lib.SpaceError, config_lib.ConfigError) as e:
            errors.append(f"member {i} {values}: {e}")
    if errors:
        raise SweepError("Invalid members:\n  - " + "\n  - ".join(errors))
    if dataset is None:
        from cnnjax.data import load_dataset

        dataset = load_dataset(config.data)
    config_lib.validate_against_data(config, dataset.train.num_examples)
    if workdir:
        files.makedirs(workdir)
    if plan is not None:
        config = config.copy_and_resolve_references()
        config.sweep.plan = plan
    from tqdm.auto import tqdm

    bar = tqdm(total=None, unit="member-step", disable=not progress, dynamic_ncols=True)
    sweep = Sweep(config, dataset, workdir, {}, bar)
    try:
        ids = sweep.new_records(members)
        train_groups(sweep, members, ids)
    finally:
        sweep.profiler.close()
        bar.close()
        if sweep.writer:
            sweep.writer.close()
    return [sweep.records[i] for i in ids]


def _has_path(config, path: str) -> bool:
    node = config
    for part in path.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


