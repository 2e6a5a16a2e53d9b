"""Grid vs random search (Bergstra & Bengio 2012): distinct learning rates, one population, real training."""

import math
import os

import pytest

from experiments import common, random_vs_grid

EXPERIMENT = random_vs_grid  # the `result` fixture (conftest.py) runs it at smoke size


def test_tables_and_plot_written(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [r["approach"] for r in rows] == ["grid", "random"]
    assert len(common.read_table(os.path.join(workdir, "repeats.csv"))) == out["repeats"]
    assert len(common.read_table(os.path.join(workdir, "members.csv"))) == out["members"]
    assert os.path.exists(os.path.join(workdir, "table.md"))
    assert os.path.getsize(os.path.join(workdir, "random_vs_grid.png")) > 10_000


def test_distinct_learning_rates(result):
    out = result[1]
    budget = out["budget"]
    assert out["distinct_lr"]["grid"] == [math.isqrt(budget)] * out["repeats"]
    assert out["distinct_lr"]["random"] == [budget] * out["repeats"]


def test_grid_trained_once_with_every_random_repeat(result):
    out = result[1]
    assert out["members"] == out["budget"] * (1 + out["repeats"])
    assert len(set(out["best"]["grid"])) == 1  # the same grid in every repeat


def test_population_trained(result):
    out = result[1]
    alive = [a for a, d in zip(out["accuracies"], out["diverged"]) if not d]
    assert alive and all(math.isfinite(a) for a in alive)
    # Chance is 0.1; the best learning rate tried learns the digits well above it.
    assert max(alive) > 0.4
    # Somewhere in four decades of learning rate training fails (diverges or stays at chance).
    assert min(a if not d else 0.0 for a, d in zip(out["accuracies"], out["diverged"])) < 0.15
    assert 1e-3 < out["best_lr"] < 1.0


def test_weight_decay_barely_matters(result):
    # Grid members sharing a learning rate differ only in weight decay: (nearly) the same accuracy.
    assert result[1]["grid_wd_spread"] <= 0.03


def test_search_helpers():
    from cnnjax.tuning.space import parse_distribution

    space = {"optimizer.learning_rate": parse_distribution("lr", "loguniform(1e-3, 1)"),
             "optimizer.weight_decay": parse_distribution("wd", "loguniform(1e-6, 1e-4)")}
    members, grid, randoms = random_vs_grid.searches(space, 9, 3, 2)
    assert len(members) == 27 and grid == list(range(9)) and randoms == [list(range(9, 18)), list(range(18, 27))]
    assert sorted({members[i]["optimizer.learning_rate"] for i in grid}) == pytest.approx([1e-3, 10**-1.5, 1.0])
    assert members[9] != members[18]  # each repeat has its own sampler seed


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        random_vs_grid.run(str(tmp_path), variant="tiny")

