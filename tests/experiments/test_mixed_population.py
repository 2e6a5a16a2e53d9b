"""The mixed optimiser (per-member optimiser and schedule) updates exactly as the library's own optimiser would."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.training.optim import make_lr_scale, make_optimizer
from experiments import common
from experiments.mixed_population import mixed_optimizer, schedule_table

STEPS, SPE = 12, 4
# (schedule name, warmup steps, extra make_lr_scale arguments)
SCHEDULES = [("constant", 0, {}), ("step", 3, {"boundaries_epochs": (1.5, 2.5), "gamma": 0.1}),
             ("cosine", 0, {}), ("exponential", 2, {"decay_rate": 0.5})]
OPTIMIZERS = [("sgd", 0.1), ("nesterov", 0.01), ("adam", 1e-3), ("adadelta", 1.0)]
PARAMS = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25])}


def _key(name, warmup, extra):
    s = {"name": name, "warmup_epochs": warmup / SPE, "boundaries_epochs": (), "gamma": 0.1, "decay_rate": 0.96,
         "decay_every_epochs": 1.0, "final_scale": 0.0, **extra}
    return tuple((k, s[k]) for k in ("name", "warmup_epochs", "boundaries_epochs", "gamma", "decay_rate",
                                     "decay_every_epochs", "final_scale"))


def _grad(params, t):
    # A fixed, step-dependent "gradient" so both runs see the same inputs.
    return jax.tree_util.tree_map(lambda p: jnp.sin(p * 3.0 + t) + 0.1 * p, params)


def test_schedule_table_rows_are_make_lr_scale():
    table = schedule_table([_key(*s) for s in SCHEDULES], SPE, STEPS)
    assert table.shape == (len(SCHEDULES), STEPS)
    for row, (name, warmup, extra) in zip(table, SCHEDULES):
        fn = make_lr_scale(name, total_steps=STEPS, steps_per_epoch=SPE, warmup_steps=warmup, **extra)
        np.testing.assert_allclose(row, [float(fn(t)) for t in range(STEPS)], rtol=1e-6, atol=1e-7)
    assert table[0].tolist() == [1.0] * STEPS  # constant (a scalar schedule) is broadcast over the steps


def _train(tx, state):
    def body(t, carry):
        params, state = carry
        updates, state = tx.update(_grad(params, t), state, params)
        return jax.tree_util.tree_map(jnp.add, params, updates), state

    return jax.lax.fori_loop(0, STEPS, body, (PARAMS, state))[0]


def test_mixed_optimizer_matches_each_library_optimizer():
    txs = [make_optimizer(name, learning_rate=1.0) for name, _ in OPTIMIZERS]
    mixed = mixed_optimizer(txs, schedule_table([_key(*s) for s in SCHEDULES], SPE, STEPS))

    @jax.jit
    def run_mixed(choice, schedule, lr):
        state = mixed.init(PARAMS)
        inner = tuple(s._replace(hyperparams={**s.hyperparams, "learning_rate": lr}) for s in state.inner)
        return _train(mixed, state._replace(choice=choice, schedule=schedule, inner=inner))

    for i, (name, lr) in enumerate(OPTIMIZERS):
        for sched, warmup, extra in SCHEDULES[i % 2::2]:  # two schedules per optimiser, each schedule twice
            scale = make_lr_scale(sched, total_steps=STEPS, steps_per_epoch=SPE, warmup_steps=warmup, **extra)
            tx = make_optimizer(name, learning_rate=lr, lr_scale=scale)
            want = jax.jit(lambda tx=tx: _train(tx, tx.init(PARAMS)))()
            j = SCHEDULES.index((sched, warmup, extra))
            got = run_mixed(jnp.int32(i), jnp.int32(j), jnp.float32(lr))
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-6, err_msg=f"{name}/{sched}")
            assert not np.allclose(want["w"], PARAMS["w"], atol=1e-3)  # it did move


def test_members_outside_the_mixed_paths_are_rejected():
    from experiments.configs.optimizers import get_config
    from experiments.mixed_population import train_mixed

    with pytest.raises(ValueError, match="cannot vary model.name"):
        train_mixed(get_config("smoke"), [{"model.name": "mlp"}], dataset=None)
    with pytest.raises(ValueError, match="optimizer.name"):
        train_mixed(get_config("smoke"), [{"optimizer.name": "lion"}], dataset=None)


@pytest.mark.slow
@pytest.mark.needs_cifar10
def test_train_mixed_equals_common_train():
    """One mixed population gives each member the curve `common.train` gives it (one population per optimiser)."""
    from experiments.configs.optimizers import get_config
    from experiments.mixed_population import train_mixed

    config = get_config("smoke")
    config.log_every_steps = 1
    common.cifar_data(config, "smoke", train_examples=128, eval_examples=64)
    dataset = common.load(config)
    members = [{"optimizer.name": "momentum", "optimizer.learning_rate": 0.01},
               {"optimizer.name": "adam", "optimizer.learning_rate": 1e-3, "seed": 3}]
    ref = common.train(config, members, dataset=dataset, plan="sequential")
    got = train_mixed(config, members, dataset=dataset, plan="sequential")
    for a, b in zip(ref, got):
        np.testing.assert_allclose([h[1] for h in b.train_history], [h[1] for h in a.train_history], rtol=1e-4)
        assert b.val_accuracy == pytest.approx(a.val_accuracy, abs=1 / 64 + 1e-9)
