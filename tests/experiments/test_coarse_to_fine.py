"""Coarse-to-fine search: ranges narrow round by round, and an edge warning widens the learning-rate range."""

import math
import os

import pytest

from experiments import coarse_to_fine, common

EXPERIMENT = coarse_to_fine  # the `result` fixture (conftest.py) runs it at smoke size


def test_files_and_rounds(result):
    workdir, out = result
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [int(r["round"]) for r in rows] == list(range(out["rounds"]))
    assert all(int(r["members"]) == out["population_size"] for r in rows)
    assert len(out["summary"]["rounds"]) == out["rounds"]
    assert os.path.exists(os.path.join(workdir, "table.md"))
    assert os.path.exists(os.path.join(workdir, "sweep", "summary.json"))
    assert os.path.getsize(os.path.join(workdir, "coarse_to_fine.png")) > 10_000
    # Every round has the same group config and size: one compiled step serves all rounds.
    assert len(out["summary"]["plans"]) == 1


def test_members_trained(result):
    accs = result[1]["accuracies"]
    assert len(accs) == result[1]["rounds"] * result[1]["population_size"]
    assert all(math.isfinite(a) for a in accs)
    assert max(accs) > 0.4  # chance is 0.1


def test_edge_warning_fires_and_widens_the_learning_rate_range(result):
    out = result[1]
    # The first range stops below the good learning rates: its best sits on the high edge.
    first = [w for w in out["warnings"] if w.startswith("round 0:")]
    assert any(coarse_to_fine.LR in w and "high edge" in w for w in first)
    assert out["ranges"][1][coarse_to_fine.LR][1] > out["ranges"][0][coarse_to_fine.LR][1]
    assert out["rows"][0]["warning_after"] != "-"


@pytest.mark.parametrize("path", [coarse_to_fine.LR, coarse_to_fine.L2])
def test_ranges_narrow_unless_widened_with_a_warning(result, path):
    out = result[1]
    widths = [coarse_to_fine.decades(r[path]) for r in out["ranges"]]
    for r in range(1, len(widths)):
        warned = any(w.startswith(f"round {r - 1}:") and path in w for w in out["warnings"])
        if not warned:
            assert widths[r] < widths[r - 1], (path, r, widths)
    # Without a warning on this dimension in earlier rounds, every later round is narrower than the first.
    for r in range(1, len(widths)):
        if not any(path in w for w in out["warnings"] if int(w.split()[1].rstrip(":")) < r):
            assert widths[r] < widths[0]
    assert any(widths[r] < widths[r - 1] for r in range(1, len(widths)))  # the search did narrow


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        coarse_to_fine.run(str(tmp_path), variant="tiny")
