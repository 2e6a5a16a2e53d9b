"""Two 3x3 convs see what one 5x5 sees with 18C^2 instead of 25C^2 weights; three see 7x7 with 27C^2 vs 49C^2."""

import math
import os

import pytest

from experiments import common, small_filters
from experiments.configs.small_filters import get_config

pytestmark = pytest.mark.needs_cifar10

COEFFICIENTS = {"two_3x3": (18, 5), "one_5x5": (25, 5), "three_3x3": (27, 7), "one_7x7": (49, 7)}


EXPERIMENT = small_filters  # the `result` fixture (conftest.py) runs it at smoke size


def test_counted_parameters_and_receptive_fields(result):
    counts = result[1]["counts"]
    assert {row["C"] for row in counts} == set(small_filters.CHANNELS["smoke"])
    for row in counts:
        per_c2, field = COEFFICIENTS[row["stack"]]
        assert row["params"] == per_c2 * row["C"] ** 2
        assert row["rf_formula"] == field
        assert row["rf_measured"] == field  # support of d(centre output)/d(input)
        assert row["macs_32x32"] == 32 * 32 * row["params"]  # stride 1, SAME padding


def test_stacks_of_3x3_are_cheaper_with_more_nonlinearities(result):
    by = {(r["stack"], r["C"]): r for r in result[1]["counts"]}
    for c in small_filters.CHANNELS["smoke"]:
        assert by[("two_3x3", c)]["params"] < by[("one_5x5", c)]["params"]
        assert by[("three_3x3", c)]["params"] < by[("one_7x7", c)]["params"]
        assert by[("three_3x3", c)]["nonlinearities"] == 3 > by[("one_7x7", c)]["nonlinearities"]


def test_both_cnns_trained_and_reported(result):
    workdir, out = result
    rows = out["training"]
    assert [r["block"] for r in rows] == ["5x5", "3x3+3x3"]
    config = get_config("smoke")
    for row in rows:
        assert row["steps"] == 640 // config.batch_size * config.num_epochs
        # It learned: the last logged loss is below the first window's (which starts near ln 10 = 2.30).
        first_loss = out["history"]["train"][row["model"]][0][1]
        assert math.isfinite(row["train_loss"]) and row["train_loss"] < first_loss, (row, first_loss)
        # Accuracy over the 320 validation images: a whole number of them, the best at least the last.
        assert abs(row["val_accuracy"] * 320 - round(row["val_accuracy"] * 320)) < 0.03
        assert row["best_val_accuracy"] == max(a for _, a in out["history"]["val"][row["model"]])
    # Same number of blocks: the 3x3 net has twice the conv layers and, at C=16, fewer parameters.
    assert rows[1]["conv_layers"] == 2 * rows[0]["conv_layers"]
    assert rows[1]["params"] < rows[0]["params"]
    for name in ("table.csv", "table.md", "counts.csv", "counts.md", "small_filters.png"):
        assert os.path.exists(os.path.join(workdir, name))
    assert len(common.read_table(os.path.join(workdir, "counts.csv"))) == 8


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        small_filters.run(str(tmp_path), variant="medium")
    with pytest.raises(ValueError, match="smoke, full"):
        get_config("medium")
