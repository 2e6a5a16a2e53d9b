"""cs231n lecture 5: what each init does to the activations of a 10-layer net."""

import os

import pytest

from experiments import common, init_activations

EXPERIMENT = init_activations  # the `result` fixture (conftest.py) runs it at smoke size


def _stds(out, key):
    return [row["std"] for row in out[key]]


def test_table_has_the_required_rows_and_columns(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert list(rows[0])[:5] == ["init", "activation", "layer", "mean", "std"]
    settings = [(r["init"], r["activation"]) for r in rows[::10]]
    assert settings == [("normal_0.01", "tanh"), ("normal_1", "tanh"), ("xavier", "tanh"),
                        ("xavier", "relu"), ("he", "relu")]
    assert [int(r["layer"]) for r in rows[:10]] == list(range(1, 11))
    for r in rows:  # the table holds the measured figures of each setting's layer
        measured = out[(r["init"], r["activation"])][int(r["layer"]) - 1]
        assert float(r["mean"]) == pytest.approx(measured["mean"], rel=1e-6, abs=1e-12)
        assert float(r["std"]) == pytest.approx(measured["std"], rel=1e-6, abs=1e-12)
    assert os.path.getsize(os.path.join(workdir, "histograms.png")) > 10_000
    assert os.path.exists(os.path.join(workdir, "table.md"))


def test_small_gaussian_collapses(result):
    stds = _stds(result[1], ("normal_0.01", "tanh"))
    # Each layer multiplies the std by about 0.01 * sqrt(500) = 0.22.
    assert stds[-1] < 1e-3 and stds[0] / stds[-1] > 1e4
    assert all(b < a for a, b in zip(stds, stds[1:]))


def test_unit_gaussian_saturates_tanh(result):
    rows = result[1][("normal_1", "tanh")]
    assert all(row["saturated"] > 0.8 for row in rows)  # |a| > 0.99
    assert all(row["std"] > 0.9 for row in rows)


def test_xavier_keeps_tanh_healthy(result):
    rows = result[1][("xavier", "tanh")]
    assert all(0.1 < row["std"] < 0.9 for row in rows)
    assert all(row["saturated"] < 0.05 for row in rows)


def test_relu_halves_the_variance_under_xavier_but_not_under_he(result):
    xavier = _stds(result[1], ("xavier", "relu"))
    he = _stds(result[1], ("he", "relu"))
    # Second moment halves per layer: std ratio ~ 1/sqrt(2) per layer, ~0.044 over nine layers.
    assert xavier[-1] / xavier[0] < 0.1
    ratios = sorted(b / a for a, b in zip(xavier, xavier[1:]))
    assert 0.6 < ratios[len(ratios) // 2] < 0.8
    assert 0.5 < he[-1] / he[0] < 2.0
    assert all(0.4 < s < 1.6 for s in he)


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        init_activations.run(str(tmp_path), variant="huge")
