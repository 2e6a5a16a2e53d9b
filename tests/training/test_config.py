"""Config validation: names list the valid choices, bad values name their key."""

import pytest

from cnnjax.config import base_config, validate_config
from cnnjax.training.config import ConfigError, validate_against_data


def test_default_and_base_configs_are_valid(load_config):
    validate_config(base_config())
    validate_config(load_config("default"))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("model.name", "resnet9000", "model.name='resnet9000' is not a model; valid choices: .*lenet5.*resnet20_cifar"),
        ("data.name", "not_a_dataset", "data.name='not_a_dataset' is not a data set; valid choices: mnist5k, digits"),
        ("optimizer.name", "lbfgs", "optimizer.name='lbfgs' is unknown; valid choices: sgd, momentum, nesterov"),
        ("schedule.name", "linear", "schedule.name='linear' is unknown; valid choices: constant, step"),
        ("data.preprocess", "whiten", "data.preprocess='whiten' is unknown; valid choices: none, channel_mean"),
        ("optimizer.learning_rate", 0.0, "optimizer.learning_rate must be > 0"),
        ("optimizer.learning_rate", -1.0, "optimizer.learning_rate must be > 0"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("num_epochs", 0, "num_epochs must be > 0"),
        ("loss.label_smoothing", 1.0, r"loss.label_smoothing must be in \[0, 1\)"),
        ("optimizer.weight_decay", -0.1, "optimizer.weight_decay must be >= 0"),
        ("model.dropout_rate", 1.5, r"model.dropout_rate must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_rejected_with_the_key_named(key, value, message):
    config = base_config()
    section, _, name = key.rpartition(".")
    target = config[section] if section else config
    target[name] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_option_the_model_or_optimizer_lacks_is_rejected():
    config = base_config()
    config.optimizer.name = "sgd"
    config.optimizer.b1 = 0.9
    with pytest.raises(ConfigError, match="optimizer.b1 is set but optimizer 'sgd' has no such hyperparameter"):
        validate_config(config)
    config = base_config()
    config.model.name = "resnet20_cifar"
    config.model.pooling = "avg"
    with pytest.raises(ConfigError, match="model 'resnet20_cifar' has no option 'pooling'"):
        validate_config(config)


def test_all_problems_reported_at_once():
    config = base_config()
    config.optimizer.learning_rate = -1.0
    config.batch_size = 0
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert "optimizer.learning_rate" in str(info.value) and "batch_size" in str(info.value)


def test_batch_larger_than_training_split_is_rejected():
    config = base_config()
    config.batch_size = 5000
    with pytest.raises(ConfigError, match="batch_size=5000 is larger than the training split of 'mnist5k' \\(4000"):
        validate_against_data(config, 4000)
