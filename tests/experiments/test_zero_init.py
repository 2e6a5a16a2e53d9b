"""Constant init leaves every unit of a hidden layer a copy of the others; random init does not."""

import os

import numpy as np
import pytest

from experiments import common, zero_init

EXPERIMENT = zero_init  # the `result` fixture (conftest.py) runs it at smoke size


def test_files_and_rows(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [(r["init"], r["layer"]) for r in rows] == [(i, f"dense{k}") for i in zero_init.INITS for k in range(2)]
    assert os.path.getsize(os.path.join(workdir, "trajectories.png")) > 10_000
    assert os.path.exists(os.path.join(workdir, "table.md"))


@pytest.mark.parametrize("layer", ["dense0", "dense1"])
def test_zero_init_sends_no_gradient_to_hidden_layers(result, layer):
    row = result[1][("zeros", layer)]
    assert row["grad_max_init"] == 0.0 and row["grad_max_after"] == 0.0
    assert row["distinct_units_after"] == 1


@pytest.mark.parametrize("layer", ["dense0", "dense1"])
def test_constant_init_keeps_units_identical(result, layer):
    row = result[1][("constant_0.1", layer)]
    # After training the gradients are far from zero, yet identical across units.
    assert row["grad_max_after"] > 1e-4
    assert row["relative_diff_after"] <= 1e-6 and row["relative_diff_init"] <= 1e-6
    assert row["distinct_units_init"] == 1 and row["distinct_units_after"] == 1


@pytest.mark.parametrize("init", ["normal_0.01", "he_normal"])
@pytest.mark.parametrize("layer", ["dense0", "dense1"])
def test_random_init_gives_distinct_units(result, init, layer):
    row = result[1][(init, layer)]
    assert row["relative_diff_init"] > 0.1 and row["relative_diff_after"] > 0.1
    assert row["distinct_units_after"] == zero_init.WIDTH


def test_only_the_random_he_net_learns_the_digits(result):
    out = result[1]
    assert out[("he_normal", "dense0")]["val_accuracy"] > 0.6
    assert out[("constant_0.1", "dense0")]["val_accuracy"] < 0.5


def test_distinct_units_counts_columns():
    w = np.array([[1.0, 1.0, 2.0], [0.5, 0.5, 0.5]])
    assert zero_init.distinct_units(w) == 2
    assert zero_init.unit_spread(w) == 1.0


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        zero_init.run(str(tmp_path), variant="tiny")
