"""The optimiser chain: every optimiser and schedule, traced hyperparameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.training import optim


def _problem():
    """A tiny logistic regression: 64 points, 2 classes, separable."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(np.int32)
    params = {"Dense_0": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}}

    def loss(p):
        logits = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return params, loss


LEARNING_RATES = {
    "sgd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "adadelta": 1.0,
    "rmsprop": 0.01, "adam": 0.01, "adamw": 0.01,
}


@pytest.mark.parametrize("name", optim.OPTIMIZER_CHOICES)
@pytest.mark.parametrize("schedule", optim.SCHEDULE_CHOICES)
def test_each_optimizer_and_schedule_decreases_loss(name, schedule):
    params, loss = _problem()
    scale = optim.make_lr_scale(schedule, total_steps=50, steps_per_epoch=10, warmup_steps=3,
                                boundaries_epochs=(3,), decay_every_epochs=2)
    tx = optim.make_optimizer(name, LEARNING_RATES[name], lr_scale=scale, weight_decay=1e-4, grad_clip_norm=5.0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    start = float(loss(params))
    for _ in range(50):
        params, state = step(params, state)
    assert float(loss(params)) < 0.9 * start


def test_schedules_match_their_formulas():
    step_scale = optim.make_lr_scale("step", total_steps=100, steps_per_epoch=10,
                                     boundaries_epochs=(3, 6), gamma=0.5)
    assert [float(step_scale(t)) for t in (0, 29, 30, 59, 60, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    warm = optim.make_lr_scale("constant", total_steps=100, steps_per_epoch=10, warmup_steps=10)
    assert float(warm(0)) == 0.0
    np.testing.assert_allclose(float(warm(5)), 0.5)
    assert float(warm(10)) == 1.0 and float(warm(99)) == 1.0
    cos = optim.make_lr_scale("cosine", total_steps=100, steps_per_epoch=10)
    np.testing.assert_allclose([float(cos(t)) for t in (0, 50, 100)], [1.0, 0.5, 0.0], atol=1e-6)
    exp = optim.make_lr_scale("exponential", total_steps=100, steps_per_epoch=10, decay_rate=0.5,
                              decay_every_epochs=2)
    np.testing.assert_allclose([float(exp(t)) for t in (0, 20, 40)], [1.0, 0.5, 0.25], rtol=1e-6)
    # Warmup then step: boundaries are in epochs of the whole run.
    ws = optim.make_lr_scale("step", total_steps=100, steps_per_epoch=10, warmup_steps=10,
                             boundaries_epochs=(5,), gamma=0.1)
    np.testing.assert_allclose([float(ws(t)) for t in (10, 49, 50)], [1.0, 1.0, 0.1], rtol=1e-6)


def test_sgd_update_is_minus_lr_times_grad_plus_decoupled_decay_on_kernels_only():
    params = {"Dense_0": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    tx = optim.make_optimizer("sgd", 0.1, weight_decay=0.5)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["Dense_0"]["kernel"], -0.1 * (1.0 + 0.5 * 2.0))
    np.testing.assert_allclose(updates["Dense_0"]["bias"], -0.1)


def test_clipping_limits_global_norm():
    params = {"w": {"kernel": jnp.zeros((3, 4))}}
    grads = {"w": {"kernel": jnp.full((3, 4), 10.0)}}
    tx = optim.make_optimizer("sgd", 1.0, grad_clip_norm=2.0)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(optax.global_norm(updates), 2.0, rtol=1e-5)


def test_hyperparameters_are_traced_values_in_the_state():
    """Changing a hyperparameter inside the state changes the update with no recompile."""
    params = {"w": {"kernel": jnp.ones((2, 2))}}
    grads = {"w": {"kernel": jnp.ones((2, 2))}}
    tx = optim.make_optimizer("momentum", 0.1, momentum=0.9, weight_decay=0.0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    first, _ = update(grads, state, params)
    hp = optim.find_hyperparams(state)
    assert set(hp) >= {"learning_rate", "momentum", "weight_decay", "lr_scale"}
    state.hyperparams["learning_rate"] = state.hyperparams["learning_rate"] * 3  # same dtype: no retrace
    second, _ = update(grads, state, params)
    np.testing.assert_allclose(second["w"]["kernel"], 3 * first["w"]["kernel"], rtol=1e-6)
    assert update._cache_size() == 1


def test_vmapped_members_use_their_own_learning_rate():
    params = {"w": {"kernel": jnp.ones((2, 2))}}
    grads = {"w": {"kernel": jnp.ones((2, 2))}}
    tx = optim.make_optimizer("adam", 1e-3)
    states = jax.vmap(lambda lr: tx.init(params)._replace(
        hyperparams={**tx.init(params).hyperparams, "learning_rate": lr}))(jnp.array([1e-3, 1e-2]))
    updates, _ = jax.vmap(tx.update, in_axes=(None, 0, None))(grads, states, params)
    np.testing.assert_allclose(updates["w"]["kernel"][1], 10 * updates["w"]["kernel"][0], rtol=1e-5)


def test_bad_names_list_valid_choices():
    with pytest.raises(ValueError, match="valid choices: sgd, momentum"):
        optim.make_optimizer("lbfgs", 0.1)
    with pytest.raises(ValueError, match="valid choices: constant, step"):
        optim.make_lr_scale("linear", 10, 1)
    with pytest.raises(ValueError, match="has no hyperparameter"):
        optim.make_optimizer("sgd", 0.1, b1=0.9)


def _accumulation_run(accumulate_steps: int, updates: int = 3):
    """Params after `updates` updates of an MLP on one batch of 8, fed as micro-batches of 8 / k."""
    from cnnjax.config import base_config
    from cnnjax.models import get_model
    from cnnjax.training.state import create_train_state
    from cnnjax.training.steps import train_step

    config = base_config()
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.2
    config.optimizer.weight_decay = 1e-2
    config.optimizer.accumulate_steps = accumulate_steps
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 1.0
    # The loop counts micro-batches: k of them per update.
    tx = optim.optimizer_from_config(config, steps_per_epoch=2 * accumulate_steps,
                                     total_steps=4 * accumulate_steps)
    state = create_train_state(get_model("mlp", 3, depth=1, width=16), tx, jax.random.PRNGKey(0), (4, 4, 1), l2=1e-3)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 8).astype(np.int32)
    step = jax.jit(train_step)
    micro = 8 // accumulate_steps
    metrics = None
    for _ in range(updates):
        for i in range(accumulate_steps):
            rows = slice(i * micro, (i + 1) * micro)
            state, metrics = step(state, {"image": images[rows], "label": labels[rows]})
    return state, metrics


@pytest.mark.parametrize("accumulate_steps", [2, 4])
def test_accumulated_micro_batches_make_the_update_of_one_whole_batch(accumulate_steps):
    whole, whole_metrics = _accumulation_run(1)
    accumulated, metrics = _accumulation_run(accumulate_steps)
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), whole.params,
                                   _accumulation_run(1, updates=0)[0].params)
    assert max(jax.tree_util.tree_leaves(moved)) > 1e-2  # the updates did something
    for a, b in zip(jax.tree_util.tree_leaves(whole.params), jax.tree_util.tree_leaves(accumulated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(metrics["learning_rate"]) == pytest.approx(float(whole_metrics["learning_rate"]))


def test_accumulation_keeps_hyperparameters_settable():
    tx = optim.accumulate_gradients(optim.make_optimizer("momentum", 0.1), 3)
    state = optim.set_hyperparams(tx.init({"w": jnp.zeros(2)}), {"learning_rate": 0.5})
    assert float(optim.find_hyperparams(state)["learning_rate"]) == 0.5
