"""Verdict rules on synthetic histories, and the tanh-MLP init verdicts on a real monitored step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cnnjax.config import base_config
from cnnjax.diagnostics import settings
from cnnjax.diagnostics.monitors import LayerMonitor
from cnnjax.diagnostics.verdicts import VerdictTracker
from cnnjax.models import get_model
from cnnjax.training import optim
from cnnjax.training.config import ConfigError
from cnnjax.training.state import create_train_state
from cnnjax.training.steps import train_step


def _tracker(total_steps=1000, lr=0.1, **monitor):
    config = base_config()
    config.monitor.update(monitor)
    thresholds, _ = settings.validate(config)
    lines = []
    return VerdictTracker(thresholds, total_steps, lr, emit=lines.append), lines


def test_exploding_loss_asks_to_stop_and_is_printed_once():
    tracker, lines = _tracker()
    tracker.observe_train(50, 2.3, 0.1, 0.1)
    assert tracker.stop_reason() is None
    tracker.observe_train(100, 9.0, 0.1, 0.1)
    tracker.observe_train(150, float("nan"), 0.1, 0.1)
    assert [v.key for v in tracker.verdicts] == ["loss_exploding"]
    assert len(lines) == 1 and "learning rate is too large" in lines[0]
    assert "stopped early" in tracker.stop_reason()


def test_loss_not_decreasing_is_judged_after_the_stall_fraction():
    tracker, _ = _tracker(total_steps=1000)
    tracker.observe_train(50, 2.30, 0.1, 0.1)
    tracker.observe_train(90, 2.29, 0.1, 0.1)  # before 10% of training: not judged yet
    assert not tracker.verdicts
    tracker.observe_train(100, 2.29, 0.1, 0.1)
    assert tracker.verdicts[0].key == "loss_not_decreasing" and tracker.verdicts[0].step == 100
    healthy, _ = _tracker(total_steps=1000)
    for step, loss in ((50, 2.3), (100, 1.5), (200, 0.8)):
        healthy.observe_train(step, loss, 0.5, 0.1)
    assert not healthy.verdicts


def test_update_ratio_far_from_1e3_names_the_layer_and_ignores_low_learning_rates():
    tracker, _ = _tracker(lr=0.1)
    for step in range(1, 6):
        # Warmup (lr well below the peak): tiny ratios are expected, not judged.
        tracker.observe_monitored(step, {"monitor/update_ratio/Conv_0": 1e-6}, learning_rate=0.01)
    assert not tracker.verdicts
    for step in range(6, 10):
        tracker.observe_monitored(step, {"monitor/update_ratio/Conv_0": 1e-3, "monitor/update_ratio/Dense_0": 0.2},
                                  learning_rate=0.1)
    assert [v.key for v in tracker.verdicts] == ["update_ratio/Dense_0"]
    assert "too large" in tracker.verdicts[0].title


def test_dead_relus_and_growing_gap():
    tracker, _ = _tracker()
    tracker.observe_monitored(10, {"monitor/dead_fraction/Dense_0": 0.1, "monitor/dead_fraction/Dense_1": 0.7}, 0.1)
    assert tracker.verdicts[0].key == "dead_relus" and "Dense_1" in tracker.verdicts[0].measured
    for step, (train_acc, val_acc) in enumerate([(0.9, 0.88), (0.95, 0.85), (0.98, 0.84), (0.99, 0.83)]):
        tracker.observe_train(step * 100 + 100, 0.5, train_acc, 0.1)
        tracker.observe_eval(step * 100 + 100, val_acc)
    assert tracker.verdicts[-1].key == "overfitting" and "regularisation" in tracker.verdicts[-1].advice


def _tanh_mlp_record(init_std):
    model = get_model("mlp", 10, depth=6, width=256, activation="tanh", kernel_init="normal", init_scale=init_std)
    state = create_train_state(model, optim.make_optimizer("sgd", 0.01), jax.random.PRNGKey(0), (28, 28, 1))
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (64, 28, 28, 1)), "label": jnp.arange(64) % 10}
    step = jax.jit(train_step, static_argnames="monitor")
    _, metrics = step(state, batch, monitor=LayerMonitor(activation="tanh"))
    return {k: float(v) for k, v in metrics.items() if k.startswith("monitor/")}


@pytest.mark.parametrize("init_std, expected", [(0.01, "activations_collapsing"), (1.0, "activations_saturating")])
def test_tanh_mlp_init_verdicts(init_std, expected):
    tracker, lines = _tracker()
    record = _tanh_mlp_record(init_std)
    tracker.observe_monitored(1, record, learning_rate=0.01)
    keys = {v.key for v in tracker.verdicts}
    assert expected in keys, lines
    assert {"activations_collapsing", "activations_saturating"} - {expected} - keys  # not both


def test_xavier_tanh_mlp_has_no_activation_verdict():
    model = get_model("mlp", 10, depth=6, width=256, activation="tanh", kernel_init="xavier_normal")
    state = create_train_state(model, optim.make_optimizer("sgd", 0.01), jax.random.PRNGKey(0), (28, 28, 1))
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (64, 28, 28, 1)), "label": jnp.arange(64) % 10}
    _, metrics = jax.jit(train_step, static_argnames="monitor")(state, batch, monitor=LayerMonitor(activation="tanh"))
    tracker, lines = _tracker()
    tracker.observe_monitored(1, {k: float(v) for k, v in metrics.items()}, learning_rate=0.01)
    assert not {v.key for v in tracker.verdicts} & {"activations_collapsing", "activations_saturating"}, lines


def test_bad_thresholds_are_rejected_with_their_keys():
    config = base_config()
    config.monitor.gap = 2.0
    config.monitor.update_ratio_low = 0.1
    config.babysit.lr_points = 1
    with pytest.raises(ConfigError) as err:
        settings.validate(config)
    message = str(err.value)
    assert "monitor.gap" in message and "monitor.update_ratio_low" in message and "babysit.lr_points" in message
