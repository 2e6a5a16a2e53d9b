"""Constant / step / exponential / cosine, with and without warmup: shapes as defined, applied as tabulated."""

import json
import math
import os

import pytest

from experiments import common, lr_schedules
from experiments.configs.lr_schedules import SCHEDULES, get_config

pytestmark = pytest.mark.needs_cifar10


EXPERIMENT = lr_schedules  # the `result` fixture (conftest.py) runs it at smoke size


def test_schedule_shapes_follow_their_definitions(result):
    out = result[1]
    config = out["config"]
    peak, spe, total = config.optimizer.learning_rate, out["steps_per_epoch"], out["total_steps"]
    lr = out["lr"]
    warm = config.experiment.warmup_epochs
    w = round(warm * spe)
    assert set(lr) == {(name, x) for name in SCHEDULES for x in (0.0, warm)}
    assert all(len(curve) == total for curve in lr.values())
    assert lr[("constant", 0.0)] == pytest.approx([peak] * total)
    # Cosine (Loshchilov & Hutter): peak at 0, half the peak at half the run, ~0 at the end.
    cosine = lr[("cosine", 0.0)]
    assert cosine[0] == pytest.approx(peak) and cosine[total // 2] == pytest.approx(peak / 2, rel=1e-3)
    assert cosine[-1] < 0.01 * peak
    # Step: the peak until the first boundary, then times gamma at each boundary.
    step = lr[("step", 0.0)]
    bounds = [round(e * spe) for e in config.schedule.boundaries_epochs]
    assert step[: bounds[0]] == pytest.approx([peak] * bounds[0])
    for b in bounds:
        assert step[b] == pytest.approx(step[b - 1] * config.schedule.gamma)
    # Exponential: decay_rate per epoch.
    expo = lr[("exponential", 0.0)]
    for epoch in range(config.num_epochs):
        assert expo[epoch * spe] == pytest.approx(peak * config.schedule.decay_rate ** epoch, rel=1e-5)
    # Warmup (Goyal et al.): a linear ramp from 0 to the peak over w steps, then the schedule from its start.
    for name in SCHEDULES:
        ramp = lr[(name, warm)]
        assert ramp[0] == 0.0 and ramp[w // 2] == pytest.approx(peak * (w // 2) / w, rel=1e-5)
        assert ramp[w] == pytest.approx(peak, rel=1e-5) and max(ramp) <= peak * (1 + 1e-6)
    assert lr[("cosine", warm)][w + (total - w) // 2] == pytest.approx(peak / 2, rel=1e-3)


def test_the_training_applied_the_tabulated_lr(result):
    workdir, out = result
    logged = 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "train/learning_rate" not in rec:
                continue
            m = out["members"][int(rec["member"])]
            want = out["lr"][(m["schedule.name"], m["schedule.warmup_epochs"])][rec["step"] - 1]
            assert rec["train/learning_rate"] == pytest.approx(want, rel=1e-5, abs=1e-9), (m, rec["step"])
            logged += 1
    assert logged == len(out["members"]) * len(out["records"][0].train_history)


def test_all_runs_finite_and_reported(result):
    workdir, out = result
    rows = out["rows"]
    assert [(r["schedule"], r["warmup_epochs"] > 0) for r in rows] == [(n, w) for n in SCHEDULES for w in (0, 1)]
    for row in rows:
        assert math.isfinite(row["final_train_loss"]) and row["diverged"] == 0
        assert row["final_val_acc"] <= row["best_val_acc"]
        # Accuracies over the 500 validation images are whole numbers of them.
        assert all(abs(row[k] * 500 - round(row[k] * 500)) < 0.05 for k in ("final_val_acc", "best_val_acc")), row
    for steps, losses in out["loss"].values():
        assert steps[-1] == out["total_steps"] and all(map(math.isfinite, losses))
    assert len(common.read_table(os.path.join(workdir, "table.csv"))) == 8
    assert 0 < os.path.getsize(out["plot"]) < 150_000 and out["plot"].endswith("lr_schedules.png")


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        lr_schedules.run(str(tmp_path), variant="medium")
    with pytest.raises(ValueError, match="smoke, full"):
        get_config("medium")
