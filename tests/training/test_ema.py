"""optimizer.ema_decay: Polyak averaging kept in the state, evaluated, checkpointed, per member."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import get_model
from cnnjax.training import optim
from cnnjax.training.state import create_train_state
from cnnjax.training.steps import eval_step, train_step

DECAY = 0.8
_STEP = jax.jit(train_step)


def _state(ema_decay=DECAY):
    model = get_model("mlp", 3, depth=1, width=8, batch_norm=True)
    tx = optim.make_optimizer("momentum", 0.3)
    return create_train_state(model, tx, jax.random.PRNGKey(0), (4, 4, 1), ema_decay=ema_decay)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": jnp.asarray(rng.normal(size=(8, 4, 4, 1)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)}


def _steps(state, count):
    history = [state]
    for i in range(count):
        state, _ = _STEP(state, _batch(i))
        history.append(state)
    return history


def test_ema_matches_a_hand_computed_average_of_weights_and_bn_statistics():
    history = _steps(_state(), 3)
    expected = history[0].variables  # the average starts at the initial weights
    for state in history[1:]:
        expected = jax.tree_util.tree_map(lambda e, w: DECAY * e + (1 - DECAY) * w, expected, state.variables)
    final = history[-1]
    assert float(jnp.max(jnp.abs(final.params["head"]["kernel"] - expected["params"]["head"]["kernel"]))) > 1e-3
    for got, want in zip(jax.tree_util.tree_leaves(final.eval_variables), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_training_is_unchanged_and_evaluation_uses_the_average():
    with_ema, without = _steps(_state(), 2)[-1], _steps(_state(0.0), 2)[-1]
    assert without.ema == {}
    for a, b in zip(jax.tree_util.tree_leaves(with_ema.variables), jax.tree_util.tree_leaves(without.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    averaged = with_ema.replace(params=with_ema.ema["params"], batch_stats=with_ema.ema["batch_stats"], ema={})
    loss = float(eval_step(with_ema, _batch(5))["loss_sum"])
    assert loss == pytest.approx(float(eval_step(averaged, _batch(5))["loss_sum"]), rel=1e-6)
    assert loss != pytest.approx(float(eval_step(without, _batch(5))["loss_sum"]), rel=1e-3)


def test_each_member_of_a_vmapped_population_averages_with_its_own_decay():
    decays = jnp.array([0.5, 0.9, 0.99], jnp.float32)
    stacked = jax.vmap(lambda key: create_train_state(
        get_model("mlp", 3, depth=1, width=8), optim.make_optimizer("sgd", 0.3), key, (4, 4, 1), ema_decay=0.9)
    )(jax.random.split(jax.random.PRNGKey(0), 3))
    stacked = stacked.replace(ema={**stacked.ema, "decay": decays})
    batch = jax.tree_util.tree_map(lambda x: jnp.stack([x] * 3), _batch())
    after, _ = jax.jit(jax.vmap(train_step))(stacked, batch)
    for i, decay in enumerate(np.asarray(decays)):
        want = decay * stacked.params["head"]["kernel"][i] + (1 - decay) * after.params["head"]["kernel"][i]
        np.testing.assert_allclose(after.ema["params"]["head"]["kernel"][i], want, rtol=1e-5, atol=1e-7)


def test_population_members_take_their_swept_decay():
    from cnnjax.config import base_config
    from cnnjax.tuning.population import init_population

    config = base_config()
    config.model.name = "mlp"
    config.optimizer.ema_decay = 0.9
    population = init_population(config, [{"optimizer.ema_decay": 0.5}, {}], 10, (4, 4, 1), 256)
    np.testing.assert_allclose(population.state.ema["decay"], [0.5, 0.9])


def test_the_average_is_checkpointed_and_used_by_eval_mode(tmp_path):
    from cnnjax.config import base_config
    from cnnjax.inference.restore import restore_run
    from cnnjax.training.checkpoint import Checkpointer
    from cnnjax.training.run_data import DATA_INFO, data_info
    from cnnjax.training.writers import write_json

    state = _steps(_state(), 2)[-1]
    workdir = str(tmp_path)
    checkpointer = Checkpointer(workdir)
    checkpointer.save(state)
    restored = checkpointer.restore(_state())
    checkpointer.close()
    for a, b in zip(jax.tree_util.tree_leaves(restored.ema), jax.tree_util.tree_leaves(state.ema)):
        np.testing.assert_array_equal(a, b)
    config = base_config()
    config.model.name = "mlp"
    config.optimizer.ema_decay = DECAY
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(config.to_json()), f)
    write_json(os.path.join(workdir, DATA_INFO), data_info("x", "abc", (4, 4, 1), np.zeros((1, 1, 1)),
                                                           np.ones((1, 1, 1))))
    config.model.depth, config.model.width, config.model.batch_norm = 1, 8, True
    run = restore_run(workdir, config)
    assert run.ema and run.step == 2
    np.testing.assert_array_equal(run.variables["params"]["head"]["kernel"], state.ema["params"]["head"]["kernel"])


def test_a_fresh_ema_state_can_be_donated_to_the_step():
    state = _state()
    state, metrics = jax.jit(train_step, donate_argnums=0)(state, _batch())
    assert float(metrics["finite"]) == 1.0
