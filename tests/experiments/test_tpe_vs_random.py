"""TPE vs random search (smoke): equal budgets, best-so-far curves, winners scored on test."""

import pytest

pytest.importorskip("optuna")

from experiments import tpe_vs_random  # noqa: E402


@pytest.mark.slow
def test_smoke_run(tmp_path):
    out = tpe_vs_random.run(str(tmp_path), "smoke")
    rows = [r for r in out["rows"] if r["seed"] != "-"]
    assert {(r["search"], r["seed"]) for r in rows} == {(s, k) for s in ("tpe", "random") for k in range(out["seeds"])}
    assert all(r["trials"] == out["trials"] == 8 for r in rows)
    for row in rows:
        curve = [c["best_val_acc"] for c in out["curves"] if (c["search"], c["seed"]) == (row["search"], row["seed"])]
        assert len(curve) == out["trials"]
        assert all(b >= a for a, b in zip(curve, curve[1:]))
        assert curve[-1] == row["best_val_acc"]
        # The smoke test split holds max_eval_examples images: a real evaluation gives k / that.
        n_test = tpe_vs_random.get_config("smoke").data.max_eval_examples
        assert abs(row["winner_test_acc"] * n_test - round(row["winner_test_acc"] * n_test)) < 1e-4
        assert row["winner_test_acc"] > 0.2  # the winners learned (chance is 0.1)
    assert (tmp_path / "tpe_vs_random.png").stat().st_size > 10_000
