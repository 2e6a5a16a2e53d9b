"""Plain nets degrade with depth, ResNets of the same depth do not (He et al. 2016, Fig. 6), at smoke size.

Checked over seeds 0-3 at this size: plain-20's training error ends 0.07-0.14 above
plain-8's and 0.07-0.13 above ResNet-20's; ResNet-20 vs ResNet-8 goes either way
(too few steps), so that is reported, not asserted.
"""

import math
import os

import pytest

from cnnjax.config import validate_config
from cnnjax.training.config import validate_against_data
from cnnjax.tuning.population import member_config
from experiments import common, degradation
from experiments.configs.degradation import get_config

pytestmark = pytest.mark.needs_cifar10


EXPERIMENT = degradation  # the `result` fixture (conftest.py) runs it at smoke size


def test_outputs_written(result):
    workdir, out = result
    for name in ("table.csv", "table.md", "degradation.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    table = common.read_table(os.path.join(workdir, "table.csv"))
    assert [r["model"] for r in table] == ["plain-8", "plain-20", "ResNet-8", "ResNet-20"]


def test_curves_finite_and_decreasing(result):
    out = result[1]
    assert out["finite"]
    for row in out["rows"]:
        assert row["diverged"] == 0
        assert row["steps"] == 150
        assert row["first_train_error"] > 0.8  # starts near chance (0.9)
        # plain-20, the degraded net, gains least in 150 smoke steps (0.868 -> 0.778 on jax 0.10.2).
        assert row["final_train_error"] < row["first_train_error"] - 0.05
        assert 0.0 < row["final_val_error"] < 0.9


def test_shortcuts_add_no_parameters(result):
    rows = {r["model"]: r for r in result[1]["rows"]}
    assert rows["plain-8"]["params"] == rows["ResNet-8"]["params"] < rows["plain-20"]["params"]
    assert rows["plain-20"]["params"] == rows["ResNet-20"]["params"]


def test_deeper_plain_net_trains_worse_and_shortcuts_fix_it(result):
    out = result[1]
    rows = {r["model"]: r for r in out["rows"]}
    assert out["plain_gap"] > 0.03  # plain-20 above plain-8: degradation
    assert rows["ResNet-20"]["final_train_error"] < rows["plain-20"]["final_train_error"] - 0.03
    assert out["resnet_gap"] < out["plain_gap"]


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, medium, full"):
        get_config("tiny")
    with pytest.raises(ValueError, match="smoke, medium, full"):
        degradation.run(str(tmp_path), variant="tiny")


def test_full_variant_is_the_papers_recipe():
    config = get_config("full")
    assert config.experiment.depths == (20, 56)
    assert config.experiment.widths == (16, 32, 64)
    assert (config.optimizer.name, config.optimizer.learning_rate, config.optimizer.momentum) == ("momentum", 0.1, 0.9)
    assert config.loss.l2 == 1e-4 and config.batch_size == 128
    steps_per_epoch = 45000 // 128
    assert [round(e * steps_per_epoch, -3) for e in config.schedule.boundaries_epochs] == [32000, 48000]
    assert math.isclose(config.num_epochs * steps_per_epoch, 64000, rel_tol=0.01)


def test_medium_variant_is_the_papers_comparison_on_the_jpegs(tmp_path):
    config, full = get_config("medium"), get_config("full")
    exp = config.experiment
    # The recipe is the paper's; only the sizes shrink.
    for key in ("optimizer", "loss", "schedule.name", "schedule.gamma", "batch_size"):
        assert config[key] == full[key], key
    assert exp.depths == (20, 56) and exp.downsample == 2 and exp.widths == (8, 16, 32)
    steps_per_epoch = exp.train_examples // config.batch_size
    assert config.num_epochs * steps_per_epoch == 1248
    assert [e / config.num_epochs for e in config.schedule.boundaries_epochs] == [0.5, 0.75]
    common.cifar_data(config, "medium", data_path=str(tmp_path), train_examples=exp.train_examples,
                      eval_examples=exp.eval_examples)
    assert (config.data.name, config.data.path) == ("image_folder", str(tmp_path))
    assert (config.data.max_train_examples, config.data.max_eval_examples) == (10000, 2000)
    members = degradation.members(exp)
    assert [(m["model.plain"], m["model.depth"]) for m in members] == [(True, 20), (True, 56), (False, 20), (False, 56)]
    for values in members:
        validate_config(member_config(config, values))
    validate_against_data(config, exp.train_examples)
