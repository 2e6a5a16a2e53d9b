"""The population training loop: P members, one compiled step, live top-k table."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.training.loop import Schedule, run_loop
from cnnjax.training.sharding import host_values, replicate
from cnnjax.tuning import plans
from cnnjax.tuning.population import (
    Population,
    epoch_permutations,
    make_member_step,
    make_population_eval,
)


@dataclasses.dataclass
class MemberRecord:
    """What the sweep reports about one member."""

    member: int
    values: dict[str, Any]
    steps: int = 0
    diverged: bool = False
    diverged_step: int | None = None
    train_loss: float = float("nan")
    train_accuracy: float = float("nan")
    val_accuracy: float = float("nan")
    val_loss: float = float("nan")
    best_val_accuracy: float = float("nan")
    val_history: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    # (step, mean train loss, mean train accuracy) over each logging window.
    train_history: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = {"member": self.member, **self.values}
        row.update(
            steps=self.steps, diverged=self.diverged, diverged_step=self.diverged_step,
            train_loss=self.train_loss, train_accuracy=self.train_accuracy,
            final_val_accuracy=self.val_accuracy, best_val_accuracy=self.best_val_accuracy,
            final_val_loss=self.val_loss, **self.extra,
        )
        return row


def grow_total(bar, units: int) -> None:
    """Adds `units` to a progress bar's total, unless the total was planned up front (`bar.planned`)."""
    if not getattr(bar, "planned", False):
        bar.total = (bar.total or 0) + units
        bar.refresh()


def _eval_arrays(split, batch_size):
    return tuple(jnp.asarray(a) for a in pipeline.pad_for_eval(split.images, split.labels, batch_size))


class PopulationTrainer:
    """Runs a population's steps; keeps the per-member records up to date.

    Args:
      config: the group's config (model, optimiser kind, batch size...).
      dataset: a loaded `cnnjax.data.Dataset`.
      records: member id -> MemberRecord (shared across rounds and rungs).
      writer: a `cnnjax.training.writers.MetricWriter` or None.
      plan / chunk_size / shared_batches: see `cnnjax.tuning.plans`.
      mesh: optional `jax.sharding.Mesh` with a 'member' axis: members are
        sharded over its devices and each device runs `plan` on its own.
      profiler: the sweep's `cnnjax.training.profiling.StepProfiler` (`profile_steps`), or None.
    """

    def __init__(self, config: ml_collections.ConfigDict, dataset, records: dict[int, MemberRecord],
                 writer=None, plan: str = "auto", chunk_size: int | None = None,
                 shared_batches: bool = False, mesh=None, progress=None, profiler=None):
        self.config = config
        self.dataset = dataset
        self.records = records
        self.writer = writer
        self.requested_plan = plan
        self.chunk_size = chunk_size
        self.shared = shared_batches
        self.mesh = mesh
        self.progress = progress
        self.profiler = profiler
        self.mean, self.std = jnp.asarray(dataset.mean), jnp.asarray(dataset.std)
        self.images = jnp.asarray(dataset.train.images)
        self.labels = jnp.asarray(dataset.train.labels)
        self.val = _eval_arrays(dataset.validation, config.eval_batch_size)
        self.member_step = make_member_step(config, self.mean, self.std)
        self._eval_fns: dict[str, Any] = {}
        self._compiled: dict[int, tuple[plans.Plan, Any]] = {}
        self.trials: list[plans.Trial] = []
        # Extra fields of every metric record (the sweep's phase), so a resume can cut the log exactly.
        self.log_fields: dict[str, Any] = {}
        self.stopped: str | None = None
        # Population size -> plan to use without measuring (a resumed sweep keeps the plan it had).
        self.forced_plans: dict[int, plans.Plan] = {}

    # -- placement ------------------------------------------------------------
    def place(self, population: Population) -> Population:
        """Shards the member axis over the mesh (if any), padded to a multiple of the mesh's size.

        Padding members are copies of the last member that are never alive: they
        keep their state, nothing reports them, and `unpadded` drops them. So a
        population of any size (a rung of 2 members on 8 devices) runs on the mesh.
        """
        if self.mesh is None:
            return population
        from jax.sharding import NamedSharding, PartitionSpec

        state, data_keys, alive = population.state, population.data_keys, population.alive
        pad = -population.size % self.mesh.size
        if pad and int(alive.shape[0]) == population.size:
            rows = np.r_[np.arange(population.size), np.full(pad, population.size - 1)]
            state = jax.tree_util.tree_map(lambda x: x[rows], state)
            data_keys = data_keys[rows]
            alive = jnp.concatenate([alive, jnp.zeros(pad, bool)])
        sharding = NamedSharding(self.mesh, PartitionSpec("member"))
        put = lambda x: jax.device_put(x, sharding)  # noqa: E731
        return dataclasses.replace(population, state=jax.tree_util.tree_map(put, state), data_keys=put(data_keys),
                                   alive=put(alive))

    def unpadded(self, population: Population) -> Population:
        """`population` without the padding members `place` added."""
        size = population.size
        if int(population.alive.shape[0]) == size:
            return population
        cut = lambda x: x[:size]  # noqa: E731
        return dataclasses.replace(population, state=jax.tree_util.tree_map(cut, population.state),
                                   data_keys=cut(population.data_keys), alive=cut(population.alive))

    def restore_target(self, population: Population) -> Population:
        """The population copied to every device of the mesh: where a checkpoint restores (any size fits)."""
        if self.mesh is None:
            return population
        return dataclasses.replace(population, state=replicate(population.state, self.mesh),
                                   data_keys=replicate(population.data_keys, self.mesh),
                                   alive=replicate(population.alive, self.mesh))

    def _step_fn(self, population: Population, permutations):
        size = population.size
        if size not in self._compiled:
            args = (population.state, population.alive, population.data_keys, permutations,
                    jnp.asarray(0), self.images, self.labels)
            forced = self.forced_plans.get(size)
            requested, chunk = (forced.name, forced.chunk_size) if forced else (self.requested_plan, self.chunk_size)
            plan, fn, trials = plans.choose_plan(
                self.member_step, args, requested, chunk, self.shared, mesh=self.mesh)
            self.trials += trials
            self._compiled[size] = (plan, fn)
        return self._compiled[size][1]

    def _eval_fn(self, size: int):
        """Evaluation mapped over members like the training plan (vmap, chunked or sequential)."""
        plan = self._compiled[size][0] if size in self._compiled else plans.Plan("vmap")
        key = str(plan)
        if key not in self._eval_fns:
            fn = make_population_eval(self.mean, self.std, batched=plan.name == "vmap",
                                      chunk_size=plan.chunk_size if plan.name == "chunked" else None)
            if self.mesh is not None:
                from jax.sharding import PartitionSpec as P

                fn = jax.jit(jax.shard_map(fn, mesh=self.mesh, in_specs=(P("member"), P(), P(), P()),
                                           out_specs=P("member"), check_vma=False))
            self._eval_fns[key] = fn
        return self._eval_fns[key]

    # -- evaluation -------------------------------------------------------------
    def evaluate(self, population: Population) -> tuple[np.ndarray, np.ndarray]:
        """Validation (accuracy, loss) of every member, one call."""
        sums = host_values(self._eval_fn(population.size)(population.state, *self.val))
        count = np.maximum(sums["count"], 1.0)
        return sums["correct"] / count, sums["loss_sum"] / count

    def record_eval(self, population: Population, step: int) -> np.ndarray:
        accuracy, loss = self.evaluate(population)
        alive = np.asarray(host_values(population.alive))
        rows = []
        for i, member in enumerate(population.ids):
            rec = self.records[member]
            rec.val_accuracy, rec.val_loss = float(accuracy[i]), float(loss[i])
            rec.val_history.append((step, rec.val_accuracy))
            if alive[i] and not (rec.best_val_accuracy >= rec.val_accuracy):
                rec.best_val_accuracy = rec.val_accuracy
            rows.append({"member": member, "val/accuracy": rec.val_accuracy, "val/loss": rec.val_loss,
                         **self.log_fields})
        if self.writer:
            for row in rows:
                self.writer.write(step, row)
        return accuracy

    # -- training ---------------------------------------------------------------
    def train(self, population: Population, num_steps: int, eval_every_steps: int | None = None, *,
              checkpoint=None, stop_at: int | None = None, stop=None) -> Population:
        """Advances every member by `num_steps` steps (frozen members stay put).

        `checkpoint(population)` is called every `checkpoint_every_steps` and
        when stopped (SIGTERM / SIGINT on `stop`, or step `stop_at`). Returns the
        population; `self.stopped` says why it stopped early (None: it ran all steps).
        """
        population = self.place(population)
        end = population.step + num_steps
        schedule = Schedule(population.steps_per_epoch, population.total_steps, eval_every_steps,
                            self.config.log_every_steps, self.config.checkpoint_every_steps)
        if self.progress is not None:
            grow_total(self.progress, num_steps * population.size)
        task = _PopulationTask(self, population, checkpoint, stop)
        result = run_loop(task, (population.state, population.alive), population.step, end, schedule,
                          eval_at_end=True, stop_at=stop_at, bar=self.progress, units_per_step=population.size,
                          stop=stop)
        state, alive = result.state
        self.stopped = result.stopped
        return self.unpadded(dataclasses.replace(population, state=state, alive=alive, step=result.step))

    def _show(self, population: Population, top: int = 5) -> None:
        if self.progress is None:
            return
        recs = sorted((self.records[m] for m in population.ids),
                      key=lambda r: -r.val_accuracy if math.isfinite(r.val_accuracy) else 1.0)
        best = recs[0]
        self.progress.set_postfix_str(
            f"best val {best.val_accuracy:.4f} (member {best.member}); "
            f"diverged {sum(self.records[m].diverged for m in population.ids)}", refresh=False)
        if getattr(self.progress, "disable", True):
            return
        lines = [f"{'member':>6} {'val_acc':>8} {'train_loss':>10}  hyperparameters"]
        for rec in recs[:top]:
            hp = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in rec.values.items())
            lines.append(f"{rec.member:>6} {rec.val_accuracy:>8.4f} {rec.train_loss:>10.4f}  {hp}"
                         + ("  DIVERGED" if rec.diverged else ""))
        self.progress.write("\n".join(lines))


class AgreedStop:
    """SIGTERM / SIGINT for a sweep over several processes: every process stops at the same step.

    A signal reaches each host at its own moment; stopping each process at once
    would leave them at different steps, waiting in collectives that no longer
    match. Instead the processes compare notes at the same steps (`agree`, every
    `log_every_steps`) and all stop after the first comparison that finds any of
    them signalled. `signal_name` is what the loop sees: None until then.
    """

    def __init__(self, local):
        self.local = local  # the process's own `cnnjax.training.loop.StopRequest`
        self.signal_name: str | None = None

    def agree(self) -> None:
        if self.signal_name is not None:
            return
        from jax.experimental import multihost_utils

        signalled = multihost_utils.process_allgather(np.int32(self.local.signal_name is not None))
        if np.any(signalled):
            self.signal_name = self.local.signal_name or "a signal to another process"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class _PopulationTask:
    """A population as a `cnnjax.training.loop.LoopTask`: the state is (stacked states, alive)."""

    def __init__(self, trainer: PopulationTrainer, population: Population, checkpoint, stop=None):
        self.trainer, self.population, self._checkpoint = trainer, population, checkpoint
        self.agreed_stop = stop if isinstance(stop, AgreedStop) else None
        self.num_examples = trainer.dataset.train.num_examples
        self.perms, self.perm_epoch = None, -1

    def _at(self, carry, step) -> Population:
        state, alive = carry
        return dataclasses.replace(self.population, state=state, alive=alive, step=step)

    def max_steps(self, step) -> int:
        return 1  # the population's step is one call a step

    def step(self, carry, step, count=1):
        pop, trainer = self.population, self.trainer
        if trainer.profiler is not None:
            trainer.profiler.at(step, carry)
        if self.agreed_stop is not None and step % trainer.config.log_every_steps == 0:
            self.agreed_stop.agree()
        epoch, index = divmod(step, pop.steps_per_epoch)
        if epoch != self.perm_epoch:
            self.perms = epoch_permutations(pop.data_keys, epoch, self.num_examples, trainer.shared)
            self.perm_epoch = epoch
        state, alive = carry
        fn = trainer._step_fn(self._at(carry, step), self.perms)
        state, alive, metrics = fn(state, alive, pop.data_keys, self.perms, jnp.asarray(index),
                                   trainer.images, trainer.labels)
        return (state, alive), (alive, {k: metrics[k] for k in ("loss", "accuracy", "learning_rate")})

    def flush(self, carry, step, pending) -> None:
        """Per member: marks divergence, logs the window's mean train loss/accuracy."""
        trainer = self.trainer
        host = host_values(pending)
        first = step - len(host) + 1
        oks = np.stack([h[0] for h in host])  # [T, P]
        for i, member in enumerate(self.population.ids):
            rec = trainer.records[member]
            bad = np.flatnonzero(~oks[:, i])
            if bad.size and not rec.diverged:
                rec.diverged, rec.diverged_step = True, int(first + bad[0])
            live_rows = [t for t in range(len(host)) if oks[t, i]]
            if live_rows:
                rec.train_loss = float(np.mean([host[t][1]["loss"][i] for t in live_rows]))
                rec.train_accuracy = float(np.mean([host[t][1]["accuracy"][i] for t in live_rows]))
                rec.steps = int(first + live_rows[-1])
                rec.train_history.append((step, rec.train_loss, rec.train_accuracy))
            if trainer.writer:
                trainer.writer.write(step, {
                    "member": member, "train/loss": rec.train_loss, "train/accuracy": rec.train_accuracy,
                    "train/learning_rate": float(host[-1][1]["learning_rate"][i]),
                    "diverged": rec.diverged, **trainer.log_fields,
                })

    def evaluate(self, carry, step) -> None:
        pop = self._at(carry, step)
        self.trainer.record_eval(pop, step)
        self.trainer._show(pop)

    def checkpoint(self, carry, step) -> None:
        if self._checkpoint is not None:
            self._checkpoint(self._at(carry, step))

    def early_stop(self) -> str | None:
        return None
