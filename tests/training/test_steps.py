"""Train and eval steps: BN running averages, losses, non-finite freezing, purity, pieces."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnnjax.models import get_model
from cnnjax.training import optim
from cnnjax.training.state import create_train_state
from cnnjax.training.steps import cross_entropy, eval_step, regularization, train_step


class TinyBN(nn.Module):
    """conv -> BN -> relu -> dense: small enough to check BN by hand."""

    @nn.compact
    def __call__(self, x, *, train):
        x = nn.Conv(4, (3, 3), use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
        x = nn.relu(x).mean(axis=(1, 2))
        return nn.Dense(3)(x)


def _batch(n=8, shape=(6, 6, 2), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.normal(1.0, 2.0, size=(n, *shape)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, classes, n), jnp.int32),
    }


def _state(model=None, opt="sgd", lr=0.1, shape=(6, 6, 2), **loss_hp):
    model = model or TinyBN()
    return create_train_state(model, optim.make_optimizer(opt, lr), jax.random.PRNGKey(0), shape, **loss_hp)


def test_bn_running_stats_follow_the_ema_formula():
    state = _state()
    batch = _batch()
    conv_out = nn.Conv(4, (3, 3), use_bias=False).apply(
        {"params": state.params["Conv_0"]}, batch["image"]
    )
    mean = conv_out.mean(axis=(0, 1, 2))
    var = conv_out.var(axis=(0, 1, 2))
    new_state, _ = jax.jit(train_step)(state, batch)
    np.testing.assert_allclose(new_state.batch_stats["bn"]["mean"], 0.9 * 0.0 + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new_state.batch_stats["bn"]["var"], 0.9 * 1.0 + 0.1 * var, rtol=1e-5)


def test_eval_uses_running_averages_not_batch_statistics():
    state = _state()
    batch = _batch()
    state, _ = jax.jit(train_step)(state, batch)
    train_out, _ = state.apply_fn(state.variables, batch["image"], train=True, mutable=["batch_stats"])
    eval_out = state.apply_fn(state.variables, batch["image"], train=False)
    assert not np.allclose(train_out, eval_out, atol=1e-3)
    # Eval with the running averages equals normalising with them by hand.
    stats = state.batch_stats["bn"]
    bn_params = state.params["bn"]
    conv = nn.Conv(4, (3, 3), use_bias=False).apply({"params": state.params["Conv_0"]}, batch["image"])
    h = (conv - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * bn_params["scale"] + bn_params["bias"]
    logits = nn.Dense(3).apply({"params": state.params["Dense_0"]}, nn.relu(h).mean(axis=(1, 2)))
    np.testing.assert_allclose(eval_out, logits, rtol=1e-4, atol=1e-5)
    sums = eval_step(state, {**batch, "mask": jnp.ones(8)})
    expected = cross_entropy(eval_out, batch["label"]) * 8
    np.testing.assert_allclose(sums["loss_sum"], expected, rtol=1e-5)


def test_eval_mask_ignores_padding_rows():
    state = _state()
    batch = _batch()
    full = eval_step(state, {k: v[:5] for k, v in batch.items()})
    masked = eval_step(state, {**batch, "mask": jnp.array([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)})
    for key in full:
        np.testing.assert_allclose(full[key], masked[key], rtol=1e-5)


def test_loss_includes_l2_and_l1_on_kernels_and_label_smoothing():
    params = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([3.0, 3.0])}}
    np.testing.assert_allclose(regularization(params, 0.1, 0.0), 0.5 * 0.1 * 5.0)
    np.testing.assert_allclose(regularization(params, 0.0, 0.1), 0.1 * 3.0)
    logits = jnp.array([[2.0, 0.0, 0.0]])
    p = jax.nn.log_softmax(logits)[0]
    smooth = -(0.9 + 0.1 / 3) * p[0] - (0.1 / 3) * (p[1] + p[2])
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([0]), 0.1), smooth, rtol=1e-6)
    base = _state()
    reg = _state(l2=1.0)
    _, m0 = train_step(base, _batch())
    _, m1 = train_step(reg, _batch())
    assert float(m1["loss"]) > float(m0["loss"])
    np.testing.assert_allclose(m0["data_loss"], m1["data_loss"], rtol=1e-6)


def test_nonfinite_step_leaves_state_unchanged(assert_trees_equal):
    state = _state()
    batch = _batch()
    bad = {**batch, "image": batch["image"].at[0, 0, 0, 0].set(jnp.nan)}
    new_state, metrics = jax.jit(train_step)(state, bad)
    assert float(metrics["finite"]) == 0.0
    assert_trees_equal(new_state, state)


def test_train_step_is_pure_and_vmaps_unchanged(assert_trees_equal):
    """vmap over two states gives what two separate calls give."""
    batch = _batch()
    s0 = _state(lr=0.1)
    s1 = s0.replace(rng=jax.random.PRNGKey(7))  # same model and tx: static fields must match
    s1 = s1.replace(opt_state=s1.opt_state._replace(
        hyperparams={**s1.opt_state.hyperparams, "learning_rate": s1.opt_state.hyperparams["learning_rate"] * 2}))
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), s0, s1)
    vs, vm = jax.jit(jax.vmap(train_step, in_axes=(0, None)))(stacked, batch)
    for i, single in enumerate((s0, s1)):
        ss, sm = jax.jit(train_step)(single, batch)
        assert_trees_equal(jax.tree_util.tree_map(lambda b, i=i: b[i], vs), ss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sm["loss"], vm["loss"][i], rtol=1e-6)


@pytest.mark.parametrize(
    "name,shape,options",
    [("lenet5", (28, 28, 1), {}), ("resnet20_cifar", (16, 16, 3), {"widths": (4, 8, 8)})],
)
def test_models_train_a_step_and_reduce_loss(name, shape, options):
    model = get_model(name, 10, **options)
    state = _state(model, opt="adam", lr=1e-3, shape=shape)
    batch = _batch(16, shape, 10)
    step = jax.jit(train_step)
    state, first = step(state, batch)
    for _ in range(10):
        state, metrics = step(state, batch)
    assert float(metrics["loss"]) < float(first["loss"])


def test_bfloat16_precision_computes_in_bf16_and_keeps_float32_state():
    import optax

    from cnnjax.models.resnet_cifar import CifarResNet

    model = CifarResNet(depth=8, num_classes=10, widths=(8, 8, 8))
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.normal(size=(16, 8, 8, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 10, 16), jnp.int32)}
    states = {p: create_train_state(model, tx, jax.random.PRNGKey(0), (8, 8, 3), precision=p)
              for p in ("float32", "bfloat16")}
    step = jax.jit(train_step)

    # The matmuls/convolutions of the bf16 step take bf16 operands; the float32 step's do not.
    def operand_dtypes(state):
        text = str(jax.make_jaxpr(train_step)(state, batch))
        return {t for t in ("bf16", "f32") if any(f"{t}[" in line and ("dot_general" in line or "conv" in line)
                                                    for line in text.splitlines())}

    assert "bf16" in operand_dtypes(states["bfloat16"])
    assert "bf16" not in operand_dtypes(states["float32"])

    new_state, metrics = step(states["bfloat16"], batch)
    for leaf in jax.tree_util.tree_leaves((new_state.params, new_state.batch_stats, new_state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    # The same forward pass as float32 up to bf16 rounding (8 mantissa bits).
    reference = states["float32"]
    logits_32, updated_32 = jax.jit(
        lambda v, x: reference.apply_fn(v, x, train=True, mutable=["batch_stats"])
    )(reference.variables, batch["image"])
    loss_32 = cross_entropy(logits_32, batch["label"])
    assert float(metrics["data_loss"]) == pytest.approx(float(loss_32), rel=2e-2)
    stats_32 = jax.tree_util.tree_leaves(updated_32["batch_stats"])
    stats_16 = jax.tree_util.tree_leaves(new_state.batch_stats)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(stats_32, stats_16)) < 5e-2
    # And it trains: a few steps on the same batch lower the loss.
    state = new_state
    for _ in range(5):
        state, later = step(state, batch)
    assert float(later["loss"]) < float(metrics["loss"])
    logits = state.apply_fn(state.variables, batch["image"], train=False)
    assert logits.dtype == jnp.float32


def test_unknown_precision_names_the_choices():
    from cnnjax.training.state import make_apply_fn

    with pytest.raises(ValueError, match="valid choices: float32, bfloat16"):
        make_apply_fn(get_model("lenet5", 10), "float16")


def test_a_step_in_two_pieces_equals_the_whole_batch_step(assert_trees_equal):
    """LeNet-5 (no batch statistics): two independent pieces give the whole batch's loss and update."""
    from cnnjax.kernels.conv import outside_loops

    model = get_model("lenet5", 10)
    state = _state(model, opt="momentum", lr=0.05, shape=(32, 32, 3), l2=1e-4)
    batch = _batch(32, (32, 32, 3), 10)
    from cnnjax.training.steps import independent_pieces

    assert independent_pieces(2, state, 32, None) == 2
    whole_state, whole = jax.jit(outside_loops(train_step))(state, batch)
    split_state, split = jax.jit(outside_loops(lambda s, b: train_step(s, b, shards=2)))(state, batch)
    for key in ("loss", "data_loss", "accuracy", "grad_norm", "update_norm"):
        np.testing.assert_allclose(split[key], whole[key], rtol=2e-5, err_msg=key)
    assert_trees_equal(split_state, whole_state, rtol=2e-5, atol=1e-7)
    assert not np.array_equal(jax.device_get(split_state.params["Conv_0"]["kernel"]),
                              jax.device_get(state.params["Conv_0"]["kernel"]))


def test_pieces_are_used_only_where_they_are_independent():
    from cnnjax.training.steps import independent_pieces

    lenet = _state(get_model("lenet5", 10), shape=(32, 32, 3))
    assert independent_pieces(2, lenet, 128, None) == 2
    assert independent_pieces(4, lenet, 128, None) == 4
    assert independent_pieces(1, lenet, 128, None) == 1
    assert independent_pieces(2, lenet, 24, None) == 1  # 12 rows a piece: too few
    assert independent_pieces(2, lenet, 33, None) == 1  # uneven
    assert independent_pieces(2, lenet, 128, object()) == 1  # a monitor's intermediates are per batch
    # BatchNorm normalises over the whole batch in training: one piece, the very same program.
    bn = _state()
    assert independent_pieces(2, bn, 64, None) == 1
    batch = _batch(64)
    one, two = (jax.jit(functools.partial(train_step, shards=n)).lower(bn, batch).as_text() for n in (1, 2))
    assert one == two


def test_a_single_run_step_on_a_cpu_takes_two_pieces(monkeypatch):
    from cnnjax.training import feeds

    monkeypatch.setattr(feeds.os, "cpu_count", lambda: 2)
    assert feeds.cpu_step_shards(None) == (2 if jax.default_backend() == "cpu" else 1)
    assert feeds.cpu_step_shards(object()) == 1  # data parallel: the mesh splits the batch
    monkeypatch.setattr(feeds.os, "cpu_count", lambda: 1)
    assert feeds.cpu_step_shards(None) == 1
