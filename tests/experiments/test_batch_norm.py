"""BN trains at learning rates where the plain net cannot, and is less sensitive to init scale (Ioffe & Szegedy 2015).

Checked over seeds 0-3 at smoke size: at lr 1 and 3 the no-BN LeNet ends at chance
(val 0.100; 3 of the 8 runs diverge) for every seed while the BN one trains (val
0.31-0.34 at lr 1, 0.22-0.26 at lr 3); without BN init scales 0.1 and 3 stay at
chance (val <= 0.15), with BN all four scales train (val 0.30-0.38; spread over
scales 0.01-0.08 against 0.19-0.22 without BN).
"""

import math
import os

import pytest

from cnnjax.config import validate_config
from cnnjax.training.config import validate_against_data
from cnnjax.tuning.population import member_config
from experiments import batch_norm, common
from experiments.configs.batch_norm import get_config

pytestmark = pytest.mark.needs_cifar10


EXPERIMENT = batch_norm  # the `result` fixture (conftest.py) runs it at smoke size


def _row(rows, model, key, value):
    (row,) = [r for r in rows if r["model"] == model and r[key] == value]
    return row


def test_outputs_written(result):
    workdir, out = result
    for name in ("table.csv", "table.md", "init_scale.csv", "summary.md", "batch_norm.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    config = get_config("smoke")
    assert len(common.read_table(os.path.join(workdir, "table.csv"))) == 2 * len(config.experiment.learning_rates)
    assert len(common.read_table(os.path.join(workdir, "init_scale.csv"))) == 2 * len(config.experiment.init_scales)
    assert all(math.isfinite(r["val_accuracy"]) for r in out["lr_rows"] + out["scale_rows"])


def test_steps_to_target_reads_the_training_curve():
    class Record:
        train_history = [(10, 2.3, 0.1), (20, 2.0, 0.25), (30, 1.8, 0.31), (40, 1.7, 0.2)]

    assert batch_norm.steps_to(Record, 0.3) == 30
    assert batch_norm.steps_to(Record, 0.5) is None


def test_moderate_lr_trains_both(result):
    rows = result[1]["lr_rows"]
    for model in ("no BN", "BN"):
        assert _row(rows, model, "learning_rate", 0.1)["val_accuracy"] > 0.2


def test_bn_trains_at_a_learning_rate_where_no_bn_stays_at_chance(result):
    rows = result[1]["lr_rows"]
    no_bn, bn = _row(rows, "no BN", "learning_rate", 1.0), _row(rows, "BN", "learning_rate", 1.0)
    assert no_bn["val_accuracy"] < 0.15 and not no_bn["trains"]
    assert bn["val_accuracy"] > 0.2 and bn["trains"] and bn["diverged"] == 0
    summary = result[1]["summary"]
    assert summary["BN"]["highest_lr_that_trains"] >= 10 * summary["no BN"]["highest_lr_that_trains"]


def test_bn_is_less_sensitive_to_init_scale(result):
    summary, rows = result[1]["summary"], result[1]["scale_rows"]
    assert summary["BN"]["init_scale_spread"] < summary["no BN"]["init_scale_spread"]
    assert summary["BN"]["val_accuracy_min_over_init_scales"] > 0.2  # trains at every scale
    assert summary["no BN"]["val_accuracy_min_over_init_scales"] < 0.15  # at chance at some scale
    assert not _row(rows, "no BN", "init_scale", 0.1)["trains"]  # vanishing signal, no BN to rescale it


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="smoke, medium, full"):
        get_config("huge")


def test_medium_variant_sweeps_the_full_grid_on_the_jpegs(tmp_path):
    config, full = get_config("medium"), get_config("full")
    exp = config.experiment
    assert exp.learning_rates == full.experiment.learning_rates
    assert exp.init_scales == full.experiment.init_scales
    for key in ("model.name", "optimizer", "schedule", "batch_size"):
        assert config[key] == full[key], key
    assert config.num_epochs * (exp.train_examples // config.batch_size) == 780
    common.cifar_data(config, "medium", data_path=str(tmp_path), train_examples=exp.train_examples,
                      eval_examples=exp.eval_examples)
    assert (config.data.name, config.data.max_train_examples, config.data.max_eval_examples) == (
        "image_folder", 10000, 2000)
    members = batch_norm.members(exp)
    # 8 learning rates at scale 1, plus the 5 other init scales at lr 0.1, without and with BN.
    assert len(members) == 2 * (8 + 5)
    assert sum(m["optimizer.learning_rate"] == 0.1 for m in members) == 2 * 6
    for values in members:
        validate_config(member_config(config, values))
    validate_against_data(config, exp.train_examples)
