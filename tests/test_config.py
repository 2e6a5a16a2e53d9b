"""The schema (`cnnjax.config`): every block checked by one `validate_config`, every experiment config valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnjax.config import base_config, validate_config
from cnnjax.training.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
# Not configs of the schema: the speed run is its own recipe, and small_filters' two CNNs are the experiment's own.
NOT_SCHEMA = {"__init__", "base", "cluster_base", "cifar10_speedrun", "small_filters"}


def _configs():
    for path in sorted(CONFIGS.glob("*.py")):
        if path.stem not in NOT_SCHEMA:
            for variant in (None, "smoke", "medium", "full"):
                yield path.stem, variant


@pytest.mark.parametrize(("name", "variant"), list(_configs()))
def test_every_experiment_config_validates(load_config, tmp_path, name, variant):
    try:
        config = load_config(name, variant)
    except ValueError as err:
        assert "Unknown variant" in str(err), err
        pytest.skip(f"{name} has no variant {variant!r}")
    if config.data.name == "image_folder":
        config.data.path = str(tmp_path)  # the one key a user must give (checked to exist)
    validate_config(config)


def test_bad_sweep_monitor_and_babysit_keys_are_one_error():
    config = base_config()
    config.sweep.strategy = "bayes"
    config.monitor.gap = 1.5
    config.babysit.lr_points = 1
    config.batch_size = 0
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    message = str(err.value)
    assert message.startswith("Invalid config:\n  - batch_size must be >= 1"), message
    for problem in ("sweep.strategy='bayes' is unknown; valid choices: single, coarse_to_fine",
                    "monitor.gap must be in (0, 1), got 1.5", "babysit.lr_points must be >= 2, got 1"):
        assert f"\n  - {problem}" in message, message


def test_the_sweep_space_is_checked_without_a_sweep_mode():
    config = base_config()
    config.sweep.space_extra = "optimizer.b1=uniform(0.8, 0.9); loss.l2=loguniform(0, 1)"
    with pytest.raises(ConfigError, match="loguniform needs low > 0"):
        validate_config(config)
    config.sweep.space_extra = "optimizer.b1=uniform(0.8, 0.9)"
    with pytest.raises(ConfigError, match="optimizer 'sgd' has no hyperparameter 'b1'"):
        validate_config(config)
    config.sweep.space_extra = "optimizer.learning_rate=loguniform(1e-3, 1)"
    config.sweep.strategy = "pbt"
    config.sweep.pbt_fraction = 0.75
    with pytest.raises(ConfigError, match="pbt needs 0 < sweep.pbt_fraction <= 0.5"):
        validate_config(config)
    config.sweep.pbt_fraction = 0.25
    validate_config(config)


def test_a_config_without_the_blocks_names_them():
    config = base_config()
    del config["monitor"], config["sweep"]
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "missing block(s) monitor" in str(err.value) and "missing block(s) sweep" in str(err.value)
