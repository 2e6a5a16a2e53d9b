"""Population == single runs; divergence isolation; plans agree; sharding == 1 device."""

from pathlib import Path

import jax
import numpy as np
import pytest

from cnnjax.tuning.population import init_population, member_config, take_members
from cnnjax.tuning.runner import MemberRecord, PopulationTrainer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, load_config):
    from cnnjax.data import load_dataset

    config = load_config("default", "smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.data.max_train_examples = 256
    config.batch_size = 32
    config.num_epochs = 1
    config.progress_bar = False
    config.log_every_steps = 4
    return config, load_dataset(config.data)


MEMBERS = [
    {"optimizer.learning_rate": 0.05, "optimizer.weight_decay": 5e-4, "seed": 0, "loss.l2": 0.0},
    {"optimizer.learning_rate": 0.2, "optimizer.weight_decay": 0.0, "seed": 3, "loss.l2": 1e-3},
    {"optimizer.learning_rate": 0.01, "optimizer.weight_decay": 1e-3, "seed": 5, "loss.l2": 0.0,
     "data_seed": 11},
]


def _train(config, dataset, members, plan="vmap", steps=8):
    pop = init_population(config, members, dataset.num_classes, dataset.image_shape,
                          dataset.train.num_examples)
    records = {i: MemberRecord(i, m) for i, m in enumerate(members)}
    trainer = PopulationTrainer(config, dataset, records, plan=plan)
    return trainer.train(pop, steps), records


def _single_run(config, dataset, values, tmp_path, restore_checkpoint):
    """The single run of one member's values: its summary and its final state."""
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.state import create_train_state
    from cnnjax.training.train import build_model, train_and_evaluate

    single = member_config(config, values)
    summary = train_and_evaluate(single, str(tmp_path), dataset=dataset)
    model = build_model(single, dataset.num_classes)
    tx = optimizer_from_config(single, 8, 8)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), dataset.image_shape)
    return summary, restore_checkpoint(tmp_path, state)


def test_member_equals_single_run_with_its_hyperparameters(setup, tmp_path, restore_checkpoint, assert_trees_equal):
    config, dataset = setup
    pop, records = _train(config, dataset, MEMBERS, steps=8)
    for i, values in list(enumerate(MEMBERS))[1:]:
        summary, single = _single_run(config, dataset, values, tmp_path / f"m{i}", restore_checkpoint)
        member = jax.tree_util.tree_map(lambda x, i=i: x[i], pop.state)
        assert_trees_equal(member.params, single.params, rtol=2e-4, atol=2e-5)
        np.testing.assert_array_equal(member.step, single.step)
        # The member's validation accuracy is the single run's, to within one example's flip.
        assert abs(records[i].val_accuracy - summary["val/accuracy"]) <= 1.0 / dataset.validation.num_examples + 1e-9


def test_plans_agree(setup, assert_trees_equal):
    config, dataset = setup
    results = {plan: _train(config, dataset, MEMBERS, plan=plan, steps=4)[0] for plan in ("vmap", "sequential")}
    assert_trees_equal(results["vmap"].state.params, results["sequential"].state.params, rtol=2e-4, atol=2e-5)


BAD = {"optimizer.learning_rate": 1e8, "optimizer.weight_decay": 0.0, "seed": 1, "loss.l2": 0.0}


def _assert_same(a, b):
    paths = [[jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(t)] for t in (a, b)]
    assert paths[0] == paths[1], "tree structures differ"
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_diverging_member_is_frozen_and_others_are_bitwise_unaffected(setup):
    """Sequential plan: bitwise equal to the population without the bad member."""
    config, dataset = setup
    with_bad, records = _train(config, dataset, [MEMBERS[0], BAD, MEMBERS[1]], plan="sequential", steps=8)
    without, _ = _train(config, dataset, [MEMBERS[0], MEMBERS[1]], plan="sequential", steps=8)
    assert records[1].diverged and records[1].diverged_step is not None
    assert not records[0].diverged and not records[2].diverged
    assert not bool(with_bad.alive[1])
    _assert_same(take_members(with_bad, [0, 2]).state, without.state)
    # The frozen member's parameters are finite: the last good ones.
    frozen = jax.tree_util.tree_map(lambda x: x[1], with_bad.state.params)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(frozen))


def test_diverging_member_does_not_leak_under_vmap(setup):
    """vmap plan: the other members are bitwise what they are next to a healthy member.

    (A vmapped program of P-1 members may round differently in the last ulp than
    one of P members, so the comparison keeps P fixed.)
    """
    config, dataset = setup
    with_bad, records = _train(config, dataset, [MEMBERS[0], BAD, MEMBERS[1]], plan="vmap", steps=8)
    healthy, _ = _train(config, dataset, [MEMBERS[0], MEMBERS[2], MEMBERS[1]], plan="vmap", steps=8)
    assert records[1].diverged
    _assert_same(take_members(with_bad, [0, 2]).state, take_members(healthy, [0, 2]).state)


def test_planner_refuses_with_numbers_when_nothing_fits(setup):
    import jax.numpy as jnp

    from cnnjax.tuning import plans
    from cnnjax.tuning.population import epoch_permutations, make_member_step

    config, dataset = setup
    pop = init_population(config, MEMBERS, dataset.num_classes, dataset.image_shape, dataset.train.num_examples)
    mean, std = jnp.asarray(dataset.mean), jnp.asarray(dataset.std)
    args = (pop.state, pop.alive, pop.data_keys, epoch_permutations(pop.data_keys, 0, 256, False), jnp.asarray(0),
            jnp.asarray(dataset.train.images), jnp.asarray(dataset.train.labels))
    step = make_member_step(config, mean, std)
    with pytest.raises(plans.PlanError, match=r"No execution plan for 3 members fits in 0 MiB of memory \(vmap: \d+ MiB"):
        plans.choose_plan(step, args, "vmap", memory_limit_bytes=1024)
    plan, _, trials = plans.choose_plan(step, args, "auto", trial_steps=1)
    assert plan in [t.plan for t in trials] and all(t.memory_bytes > 0 for t in trials)
