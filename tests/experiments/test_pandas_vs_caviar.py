"""Pandas (one model at a time) vs caviar (one population) in caviar's wall clock: both valid, budget kept."""

import math
import os

import pytest

from cnnjax.tuning.space import flatten_space
from experiments import common, pandas_vs_caviar

EXPERIMENT = pandas_vs_caviar  # the `result` fixture (conftest.py) runs it at smoke size


def test_files_written(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [r["approach"] for r in rows] == ["caviar", "pandas"]
    trials = common.read_table(os.path.join(workdir, "trials.csv"))
    assert len(trials) == len(out["caviar"]["trials"]) + len(out["pandas"]["trials"])
    assert os.path.exists(os.path.join(workdir, "table.md"))
    assert os.path.getsize(os.path.join(workdir, "pandas_vs_caviar.png")) > 10_000


def test_caviar_trained_its_population(result):
    out = result[1]
    config = pandas_vs_caviar.get_config("smoke")
    trials = out["caviar"]["trials"]
    assert len(trials) == config.sweep.population_size
    assert all(math.isfinite(t["best_val_acc"]) for t in trials if not t["diverged"])
    assert len({t["lr"] for t in trials}) == len(trials)
    assert out["rows"][0]["best_val_acc"] > 0.3  # chance is 0.1


def test_pandas_searched_sequentially(result):
    trials = result[1]["pandas"]["trials"]
    # How many fit in caviar's wall clock depends on the machine's load. Each trial's learning rate is the
    # line search's proposal given the results before it: replaying the search proposes the same ones.
    config = pandas_vs_caviar.get_config("smoke")
    space = flatten_space(config.sweep.space)["optimizer.learning_rate"]
    search = pandas_vs_caviar.LineSearch(config.optimizer.learning_rate, space.low, space.high)
    for trial in trials:
        assert search.propose() == pytest.approx(trial["lr"], rel=1e-12)
        search.tell(trial["lr"], trial["best_val_acc"])
    assert all(math.isfinite(t["best_val_acc"]) for t in trials if not t["diverged"])
    assert trials[0]["lr"] == pandas_vs_caviar.get_config("smoke").optimizer.learning_rate
    finished = [t["finished_s"] for t in trials]
    assert finished == sorted(finished) and finished[0] > 0
    assert result[1]["rows"][1]["best_val_acc"] > 0.25  # chance is 0.1; more trials (a quieter machine) do better


def test_timings_and_budget(result):
    out = result[1]
    budget = out["budget_s"]
    # Pandas starts a trial only if a typical one still fits: it may overrun by one slow trial at most ...
    assert out["pandas"]["wall_s"] <= 1.25 * budget + 1.0
    durations = out["pandas"]["durations"]
    finished = [t["finished_s"] for t in out["pandas"]["trials"]]
    assert len(durations) == len(finished)
    # ... its trials run one after another: each finishes after all the trial time before it ...
    for k, when in enumerate(finished):
        assert when >= sum(durations[: k + 1]) - 1e-6, (k, finished, durations)
    # ... and it stops for the budget only when one more typical trial would not have fitted.
    if out["pandas"]["stopped"] == "budget" and len(durations) > 1:
        typical = sum(durations[1:]) / len(durations[1:])
        assert out["pandas"]["wall_s"] + typical > budget, (out["pandas"]["wall_s"], typical, budget)
    # The table reports the budget caviar's population took.
    table = common.read_table(os.path.join(result[0], "table.csv"))
    assert float(table[0]["wall_s"]) == pytest.approx(budget, rel=1e-3)


def test_line_search_turns_round_and_refines():
    def accuracy(lr):  # a peaked curve in log lr with its top at 1e-2
        return 0.9 - 0.1 * math.log10(lr / 1e-2) ** 2

    search = pandas_vs_caviar.LineSearch(1e-3, 1e-5, 1.0)
    tried = []
    while (lr := search.propose()) is not None:
        tried.append(lr)
        search.tell(lr, accuracy(lr))
    assert tried[:3] == pytest.approx([1e-3, 4e-3, 1.6e-2])
    assert tried[3] == pytest.approx(6.4e-2)  # overshoots, then turns round with factor 2 from the best
    assert tried[4] == pytest.approx(8e-3)
    assert abs(math.log10(search.best_lr / 1e-2)) < math.log10(1.3)
    assert len(tried) == len(set(tried)) < 20


def test_line_search_stays_in_range():
    search = pandas_vs_caviar.LineSearch(0.5, 1e-4, 1.0)
    tried = []
    while (lr := search.propose()) is not None:
        tried.append(lr)
        search.tell(lr, lr)  # better and better towards the upper bound
    assert max(tried) == 1.0 and min(tried) >= 1e-4


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        pandas_vs_caviar.run(str(tmp_path), variant="tiny")
