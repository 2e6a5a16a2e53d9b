"""Seven optimisers, each at the lr its own grid picked: every one learns, and the bookkeeping is exact."""

import math
import os

import pytest

from experiments import common, optimizers
from experiments.configs.optimizers import OPTIMIZERS, get_config

pytestmark = pytest.mark.needs_cifar10


EXPERIMENT = optimizers  # the `result` fixture (conftest.py) runs it at smoke size


def test_grids_are_the_configured_ones_and_each_winner_is_its_grids_best(result):
    out = result[1]
    config = get_config("smoke")
    assert [r["optimizer"] for r in out["rows"]] == list(OPTIMIZERS)
    assert len(out["grid"]) == sum(len(config.experiment.grids[n]) for n in OPTIMIZERS)
    for row in out["rows"]:
        name = row["optimizer"]
        grid = [g for g in out["grid"] if g["optimizer"] == name]
        assert [g["lr"] for g in grid] == pytest.approx(list(config.experiment.grids[name]))
        assert row["lrs_tried"] == ", ".join(f"{lr:g}" for lr in config.experiment.grids[name])
        alive = [g for g in grid if not g["diverged"]]
        best = max(alive, key=lambda g: (g["best_val_acc"], -g["final_train_loss"]))
        assert row["tuned_lr"] == best["lr"] and [g["tuned"] for g in grid].count(True) == 1
        assert row["at_grid_edge"] == (row["tuned_lr"] in (min(g["lr"] for g in grid), max(g["lr"] for g in grid)))
    # AdaDelta's lr is a multiplier of Zeiler's unit-corrected step (paper value 1.0): its grid straddles 1.
    adadelta = config.experiment.grids["adadelta"]
    assert min(adadelta) < 1.0 < max(adadelta) or 1.0 in adadelta


def test_every_tuned_optimiser_learns(result):
    out = result[1]
    for row in out["rows"]:
        assert math.isfinite(row["final_train_loss"])
        # An accuracy over the 500 validation images is a whole number of them.
        assert abs(row["best_val_acc"] * 500 - round(row["best_val_acc"] * 500)) < 0.05, row
        # Chance is 0.1 on CIFAR-10; the loss starts near ln 10 = 2.30.
        assert row["best_val_acc"] > 0.1 or row["final_train_loss"] < row["first_window_loss"], row
        steps, losses = out["curves"][row["optimizer"]]
        assert steps[-1] == out["steps"] and len(steps) == len(losses) and all(map(math.isfinite, losses))
    config = get_config("smoke")
    assert out["steps"] == config.experiment.train_examples // config.batch_size * config.num_epochs


def test_files_written(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [r["optimizer"] for r in rows] == list(OPTIMIZERS)
    assert len(common.read_table(os.path.join(workdir, "grid.csv"))) == len(out["grid"])
    assert open(os.path.join(workdir, "table.md")).read().count("\n| ") == len(OPTIMIZERS) + 1
    assert 0 < os.path.getsize(out["plot"]) < 150_000 and out["plot"].endswith("optimizers.png")


def test_pick_best_never_picks_a_diverged_member():
    from cnnjax.tuning.runner import MemberRecord

    good = MemberRecord(0, {}, best_val_accuracy=0.3, train_loss=2.0)
    diverged = MemberRecord(1, {}, best_val_accuracy=0.5, train_loss=float("nan"), diverged=True)
    tie = MemberRecord(2, {}, best_val_accuracy=0.3, train_loss=1.9)
    assert optimizers.pick_best([diverged, good]) is good
    assert optimizers.pick_best([good, tie, diverged]) is tie  # equal accuracy: lower training loss


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        optimizers.run(str(tmp_path), variant="medium")
    with pytest.raises(ValueError, match="smoke, full"):
        get_config("medium")
