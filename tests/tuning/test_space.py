"""Search spaces: parsing, bad input, samplers, grouping."""

import math

import numpy as np
import pytest

from cnnjax.config import base_config
from cnnjax.tuning import space as sp


def test_distributions_map_unit_interval_to_their_ranges():
    log = sp.parse_distribution("lr", "loguniform(1e-4, 1)")
    assert math.isclose(log.value(0.0), 1e-4) and math.isclose(log.value(0.5), 1e-2, rel_tol=1e-9)
    beta = sp.parse_distribution("m", "one_minus_loguniform(0.9, 0.999)")
    assert math.isclose(beta.value(0.0), 0.9) and math.isclose(beta.value(0.5), 0.99, rel_tol=1e-9)
    assert math.isclose(beta.value(0.999999999), 0.999, rel_tol=1e-6)
    assert sp.parse_distribution("n", "int(1, 3)").grid(5) == [1, 2, 3]
    assert sp.parse_distribution("c", "choice('a', 'b')").value(0.7) == "b"
    assert sp.parse_distribution("u", "uniform(0, 0.2)").grid(3) == [0.0, 0.1, 0.2]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("uniform(1, 1)", "empty or inverted range"),
        ("loguniform(1, 0.1)", "empty or inverted range"),
        ("loguniform(0, 1)", "loguniform needs low > 0"),
        ("one_minus_loguniform(0.9, 1.0)", "one_minus_loguniform needs 0 <= low < high < 1"),
        ("gaussian(0, 1)", "unknown distribution 'gaussian'; valid choices: uniform, loguniform"),
        ("choice()", "choice\\(\\) needs at least one value"),
        ("loguniform", "expected KIND\\(ARGS\\)"),
    ],
)
def test_bad_distributions_are_rejected(spec, message):
    with pytest.raises(sp.SpaceError, match=message):
        sp.parse_distribution("optimizer.learning_rate", spec)


def test_random_log_uniform_covers_every_decade_and_quasi_random_is_more_even():
    space = {"optimizer.learning_rate": sp.parse_distribution("lr", "loguniform(1e-4, 1)")}
    values = [m["optimizer.learning_rate"] for m in sp.sample(space, "random", 400, seed=0)]
    assert min(values) >= 1e-4 and max(values) <= 1
    counts = np.histogram(np.log10(values), bins=4, range=(-4, 0))[0]
    assert counts.min() > 70  # ~100 per decade
    quasi = [m["optimizer.learning_rate"] for m in sp.sample(space, "quasi_random", 16, seed=0)]
    random16 = [m["optimizer.learning_rate"] for m in sp.sample(space, "random", 16, seed=0)]
    gap = lambda v: np.max(np.diff(np.sort(np.log10(v))))  # noqa: E731
    assert gap(quasi) < gap(random16)


def test_grid_is_the_product_and_larger_than_budget_is_an_error():
    space = {
        "optimizer.learning_rate": sp.parse_distribution("lr", "loguniform(1e-3, 1e-1)"),
        "loss.l2": sp.parse_distribution("l2", "choice(0.0, 1e-4)"),
    }
    grid = sp.sample(space, "grid", None, grid_points=3)
    assert len(grid) == 6
    assert sorted({round(m["optimizer.learning_rate"], 6) for m in grid}) == [0.001, 0.01, 0.1]
    with pytest.raises(sp.SpaceError, match="grid has 6 points .* larger than the budget sweep.population_size=4"):
        sp.sample(space, "grid", 4, grid_points=3)
    with pytest.raises(sp.SpaceError, match="population_size must be >= 1"):
        sp.sample(space, "random", 0)


def test_hyperparameters_the_model_or_optimizer_lacks_are_rejected():
    config = base_config()
    config.optimizer.name = "sgd"
    with pytest.raises(sp.SpaceError, match="optimizer 'sgd' has no hyperparameter 'b1'"):
        sp.check_paths({"optimizer.b1": sp.parse_distribution("b1", "uniform(0.8, 0.9)")}, config)
    config.model.name = "resnet20_cifar"
    with pytest.raises(sp.SpaceError, match="model 'resnet20_cifar' has no option 'dropout_rate'"):
        sp.check_paths({"model.dropout_rate": sp.parse_distribution("d", "uniform(0, 0.5)")}, config)
    with pytest.raises(sp.SpaceError, match="the config has no key 'loss.l3'"):
        sp.check_paths({"loss.l3": sp.parse_distribution("x", "uniform(0, 1)")}, config)


def test_ema_decay_varies_per_member_only_over_an_ema_and_accumulate_steps_not_at_all():
    from cnnjax.tuning.population import init_population

    config = base_config()
    config.model.name = "mlp"
    space = {"optimizer.ema_decay": sp.parse_distribution("optimizer.ema_decay", "uniform(0.5, 0.99)")}
    with pytest.raises(sp.SpaceError, match="set --config.optimizer.ema_decay to a value in"):
        sp.check_paths(space, config)
    config.optimizer.ema_decay = 0.9
    sp.check_paths(space, config)  # accepted, whatever the optimiser
    members = sp.sample(space, "grid", 2, grid_points=2)
    population = init_population(config, members, 10, (4, 4, 1), 256)
    np.testing.assert_allclose(population.state.ema["decay"], [0.5, 0.99], rtol=1e-6)
    with pytest.raises(sp.SpaceError, match="accumulate_steps: cannot vary between members"):
        sp.check_paths({"optimizer.accumulate_steps": sp.parse_distribution("a", "choice(1, 2)")}, config)


def test_config_and_space_refuse_the_same_optimizer_hyperparameters():
    from cnnjax.config import validate_config
    from cnnjax.training.config import ConfigError
    from cnnjax.training.optim import OPTIMIZER_CHOICES, OPTIMIZER_HPARAMS, OWN_HPARAM_KEYS

    for name in OPTIMIZER_CHOICES:
        for key in OWN_HPARAM_KEYS:
            config = base_config()
            config.optimizer.name = name
            try:
                sp.check_paths({f"optimizer.{key}": sp.parse_distribution(key, "uniform(0.1, 0.5)")}, config)
                space_refuses = False
            except sp.SpaceError as err:
                assert f"optimizer {name!r} has no hyperparameter {key!r}" in str(err)
                space_refuses = True
            config.optimizer[key] = 0.5
            try:
                validate_config(config)
                config_refuses = False
            except ConfigError as err:
                config_refuses = f"optimizer.{key} is set but optimizer {name!r} has no such hyperparameter" in str(err)
            assert config_refuses == space_refuses == (key not in OPTIMIZER_HPARAMS[name]), (name, key)


def test_static_values_split_the_sweep_into_groups():
    members = [
        {"optimizer.learning_rate": 0.1, "optimizer.name": "adam"},
        {"optimizer.learning_rate": 0.2, "optimizer.name": "sgd"},
        {"optimizer.learning_rate": 0.3, "optimizer.name": "adam"},
    ]
    groups = sp.split_static(members)
    assert groups == [({"optimizer.name": "adam"}, [0, 2]), ({"optimizer.name": "sgd"}, [1])]
