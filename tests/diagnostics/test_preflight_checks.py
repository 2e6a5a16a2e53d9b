"""Each pre-flight check fails where it should and passes where it should."""

from __future__ import annotations

import math

import jax
import pytest
from flax import linen as nn

from cnnjax.config import base_config
from cnnjax.diagnostics import checks, settings
from cnnjax.training.optim import find_hyperparams, set_hyperparams
from cnnjax.training.steps import train_step
from cnnjax.training.train import build_model


class SmallNet(nn.Module):
    """dense -> relu -> dense, with the output layer's init scale chosen by the test."""

    num_classes: int = 4
    head_std: float = 0.01

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.relu(nn.Dense(32)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(self.head_std))(x)


@pytest.fixture()
def small(make_synthetic):
    """`small(head_std=..., step_fn=..., **babysit_overrides)`: a check context on synthetic data."""

    def make(head_std=0.01, step_fn=train_step, **babysit):
        return _small_context(make_synthetic(), head_std, step_fn, **babysit)

    return make


def _small_context(dataset, head_std, step_fn, **babysit):
    config = base_config()
    config.batch_size = 20
    config.babysit.examples = 100
    config.babysit.update(babysit)
    _, check_settings = settings.validate(config)
    return checks.CheckContext(config, dataset, SmallNet(head_std=head_std), check_settings, step_fn)


def ascent_step(state, batch):
    """The step with the gradient's sign flipped: the update climbs the loss."""
    lr = find_hyperparams(state.opt_state)["learning_rate"]
    new, metrics = train_step(state.replace(opt_state=set_hyperparams(state.opt_state, {"learning_rate": -lr})), batch)
    return new.replace(opt_state=set_hyperparams(new.opt_state, {"learning_rate": lr})), metrics


def frozen_step(state, batch):
    """The step with learning rate 0."""
    return train_step(state.replace(opt_state=set_hyperparams(state.opt_state, {"learning_rate": 0.0})), batch)


def test_initial_loss_is_ln_c_with_a_small_output_layer(small):
    result = checks.check_initial_loss(small(head_std=0.01))
    assert result.status == checks.PASS, result.measured
    assert result.details["expected"] == pytest.approx(math.log(4))
    assert abs(result.details["loss"] - math.log(4)) < 0.05


def test_initial_loss_fails_when_the_last_layer_is_initialised_large(small):
    result = checks.check_initial_loss(small(head_std=10.0))
    assert result.status == checks.FAIL
    assert result.details["loss"] > 3 * math.log(4)
    assert "init" in result.advice and "labels" in result.advice and "softmax" in result.advice


def test_regularisation_raises_the_loss_by_the_penalty(small):
    result = checks.check_regularization(small())
    assert result.status == checks.PASS, result.measured
    assert result.details["increase"] == pytest.approx(result.details["expected_increase"], rel=1e-3)
    assert result.details["strength"] == 1e-3  # babysit.reg_strength: base_config has no L2


def test_regularisation_check_fails_when_the_penalty_is_lost(small):
    def no_penalty_step(state, batch):
        return train_step(state.replace(loss_hparams={**state.loss_hparams, "l2": state.loss_hparams["l2"] * 0}), batch)

    result = checks.check_regularization(small(step_fn=no_penalty_step))
    assert result.status == checks.FAIL


def test_overfit_passes_and_fails_with_a_broken_step(small):
    assert checks.check_overfit(small()).status == checks.PASS
    for broken in (ascent_step, frozen_step):
        result = checks.check_overfit(small(step_fn=broken, overfit_steps=40))
        assert result.status == checks.FAIL, broken.__name__
        assert "the backward pass, the data or the learning rate is broken" in result.advice.lower()


def test_overfit_and_symmetry_on_the_default_config(default_config, mnist5k):
    _, check_settings = settings.validate(default_config)
    ctx = checks.CheckContext(default_config, mnist5k, build_model(default_config, 10), check_settings)
    overfit = checks.check_overfit(ctx)
    assert overfit.status == checks.PASS, overfit.measured
    assert overfit.details["examples"] == 20
    assert checks.check_symmetry(ctx).status == checks.PASS


def test_zero_init_gives_identical_unit_gradients(default_config, mnist5k):
    default_config.model.kernel_init = "zeros"
    _, check_settings = settings.validate(default_config)
    ctx = checks.CheckContext(default_config, mnist5k, build_model(default_config, 10), check_settings)
    result = checks.check_symmetry(ctx)
    assert result.status == checks.FAIL
    assert result.details["symmetric_layers"] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]  # not the output layer
    assert "force" in result.advice


def test_check_batches_are_class_balanced(mnist5k, default_config):
    # mnist5k's training split is stored sorted by label: a plain prefix would be one class.
    _, check_settings = settings.validate(default_config)
    ctx = checks.CheckContext(default_config, mnist5k, None, check_settings)
    labels = jax.device_get(ctx.batch(20)["label"])
    assert sorted(set(labels.tolist())) == list(range(10))
