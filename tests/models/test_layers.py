"""Shared building blocks: stochastic pooling, other pooling helpers, init schemes."""

from __future__ import annotations

import itertools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import layers


def _windows(x, window, stride):
    """Brute force: {(n, i, j, c): list of window values} for VALID pooling."""
    n, h, w, c = x.shape
    out = {}
    for b, i, j, ch in itertools.product(
        range(n), range((h - window) // stride + 1), range((w - window) // stride + 1), range(c)
    ):
        patch = x[b, i * stride : i * stride + window, j * stride : j * stride + window, ch]
        out[(b, i, j, ch)] = patch.reshape(-1)
    return out


def _reference_expectation(values):
    total = values.sum()
    return 0.0 if total == 0 else float((values * values).sum() / total)


def _small_input(seed=0, shape=(2, 5, 5, 3)):
    rng = np.random.RandomState(seed)
    x = np.maximum(rng.normal(size=shape), 0.0).astype(np.float32)
    x[0, :3, :3, 0] = 0.0  # all-zero window at (0, 0, 0, 0) for windows up to 3x3
    return x


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2), (2, 1)])
def test_stochastic_pool_test_mode_is_probability_weighted_average(window, stride):
    x = _small_input()
    got = np.asarray(layers.stochastic_pool(jnp.asarray(x), window, stride))
    for index, values in _windows(x, window, stride).items():
        np.testing.assert_allclose(got[index], _reference_expectation(values), rtol=1e-5, atol=1e-7)
    assert got[0, 0, 0, 0] == 0.0


@pytest.mark.parametrize("window,stride", [(2, 2), (3, 2)])
def test_stochastic_pool_train_mode_samples_in_proportion_to_value(window, stride):
    x = _small_input(seed=1)
    samples = 2000
    keys = jax.random.split(jax.random.PRNGKey(0), samples)
    draws = np.asarray(jax.jit(jax.vmap(lambda k: layers.stochastic_pool(jnp.asarray(x), window, stride, rng=k)))(keys))
    for index, values in _windows(x, window, stride).items():
        picked = draws[(slice(None), *index)]
        if values.sum() == 0:
            assert np.all(picked == 0.0)
            continue
        # Every draw is one of the window's positive values...
        assert np.all(np.isin(picked, values[values > 0]))
        # ...chosen with probability value / sum (binomial error ~ 1/sqrt(2000)).
        for value in np.unique(values[values > 0]):
            expected = values[values == value].sum() / values.sum()
            assert abs(np.mean(picked == value) - expected) < 0.05
        # The sample mean estimates the test-time output.
        assert abs(picked.mean() - _reference_expectation(values)) < 0.1 * values.max() + 1e-6


def test_stochastic_pool_gradients_are_finite_with_zero_windows():
    x = jnp.asarray(_small_input())

    def f(x, rng):
        return layers.stochastic_pool(x, 2, rng=rng).sum()

    for rng in (None, jax.random.PRNGKey(0)):
        grad = jax.jit(jax.grad(f))(x, rng)
        assert np.all(np.isfinite(np.asarray(grad)))
        assert np.any(np.asarray(grad) != 0)


def test_stochastic_pool_module_uses_dropout_rng_in_training():
    module = layers.StochasticPool(2)
    x = jnp.asarray(_small_input(seed=2, shape=(1, 4, 4, 8)))
    test_out = module.apply({}, x, train=False)
    outs = [module.apply({}, x, train=True, rngs={"dropout": jax.random.PRNGKey(s)}) for s in (0, 1)]
    assert test_out.shape == outs[0].shape == (1, 2, 2, 8)
    assert not np.array_equal(np.asarray(outs[0]), np.asarray(outs[1]))
    with pytest.raises(flax.errors.InvalidRngError):
        module.apply({}, x, train=True)  # no 'dropout' rng supplied


def test_pool_dispatch_and_unknown_kind():
    x = jnp.asarray(_small_input(shape=(1, 4, 4, 2)))
    np.testing.assert_allclose(layers.pool(x, "max", 2), x.reshape(1, 2, 2, 2, 2, 2).max((2, 4)))
    np.testing.assert_allclose(layers.pool(x, "avg", 2), x.reshape(1, 2, 2, 2, 2, 2).mean((2, 4)), rtol=1e-6)
    with pytest.raises(ValueError, match="valid choices"):
        layers.pool(x, "median", 2)


@pytest.mark.parametrize("size,out", [((6, 6), (6, 6)), ((14, 14), (4, 4)), ((1, 3), (2, 2))])
def test_adaptive_avg_pool_matches_pytorch_bins(size, out):
    x = np.random.RandomState(0).normal(size=(1, *size, 2)).astype(np.float32)
    got = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), out))
    for i, j in itertools.product(range(out[0]), range(out[1])):
        r0, r1 = (i * size[0]) // out[0], -(-((i + 1) * size[0]) // out[0])
        c0, c1 = (j * size[1]) // out[1], -(-((j + 1) * size[1]) // out[1])
        np.testing.assert_allclose(got[0, i, j], x[0, r0:r1, c0:c1].mean((0, 1)), rtol=1e-5)


@pytest.mark.parametrize("n,window,stride,padding,expected", [
    (112, 3, 2, 0, 56), (56, 3, 2, 0, 28), (14, 2, 2, 0, 7), (7, 3, 1, 1, 7), (16, 3, 2, 0, 8),
])  # fmt: skip
def test_max_pool_ceil_output_size(n, window, stride, padding, expected):
    x = jnp.ones((1, n, n, 1))
    assert layers.max_pool_ceil(x, window, stride, padding).shape == (1, expected, expected, 1)


def test_local_response_norm_matches_formula():
    x = np.random.RandomState(0).normal(size=(1, 2, 2, 7)).astype(np.float32) * 10
    got = np.asarray(layers.local_response_norm(jnp.asarray(x)))
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        denom = (2.0 + 1e-4 * np.square(x[..., lo:hi]).sum(-1)) ** 0.75
        np.testing.assert_allclose(got[..., c], x[..., c] / denom, rtol=1e-5)


# fan_in = 3*3*64 = 576, fan_out = 3*3*128 = 1152 for a (3, 3, 64, 128) conv kernel.
_FAN_IN, _FAN_OUT = 576, 1152
_EXPECTED_VARIANCE = {
    "zeros": 0.0,
    "normal": 0.05**2,
    "xavier_uniform": 2.0 / (_FAN_IN + _FAN_OUT),
    "xavier_normal": 2.0 / (_FAN_IN + _FAN_OUT),
    "he_normal": 2.0 / _FAN_IN,
    "he_uniform": 2.0 / _FAN_IN,
    "he_normal_fan_out": 2.0 / _FAN_OUT,
    "lecun_normal": 1.0 / _FAN_IN,
}


def test_every_init_choice_has_an_expected_variance():
    assert set(_EXPECTED_VARIANCE) == set(layers.INIT_CHOICES)


@pytest.mark.parametrize("name", sorted(_EXPECTED_VARIANCE))
def test_init_scheme_variance(name):
    scale = 0.05 if name == "normal" else 1.0
    kernel = layers.get_init(name, scale)(jax.random.PRNGKey(0), (3, 3, 64, 128), jnp.float32)
    variance = float(jnp.var(kernel))
    expected = _EXPECTED_VARIANCE[name]
    if expected == 0.0:
        assert variance == 0.0
    else:
        # 73,728 draws: the sample variance is within a few percent.
        assert abs(variance / expected - 1.0) < 0.05
    assert abs(float(jnp.mean(kernel))) <= 0.05 * expected**0.5


def test_init_scale_multiplies_variance():
    base = layers.get_init("he_normal")(jax.random.PRNGKey(0), (256, 256), jnp.float32)
    doubled = layers.get_init("he_normal", 2.0)(jax.random.PRNGKey(0), (256, 256), jnp.float32)
    assert abs(float(jnp.var(doubled) / jnp.var(base)) - 2.0) < 0.02


def test_dense_fan_in_variance_propagates_through_mlp():
    """He init keeps the second moment of ReLU activations roughly constant with depth."""
    from cnnjax.models import get_model

    model = get_model("mlp", 10, depth=6, width=512, kernel_init="he_normal", use_bias=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 512))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)
    _, state = model.apply(variables, x, train=False, mutable=["intermediates"])
    moments = [float(jnp.mean(jnp.square(state["intermediates"][f"layer{i}"][0]))) for i in range(6)]
    assert max(moments) / min(moments) < 1.5


@pytest.mark.parametrize("name,mode,distribution,gain", [
    ("xavier_uniform", "fan_avg", "uniform", 1.0), ("xavier_normal", "fan_avg", "truncated_normal", 1.0),
    ("he_normal", "fan_in", "truncated_normal", 2.0), ("he_uniform", "fan_in", "uniform", 2.0),
    ("he_normal_fan_out", "fan_out", "truncated_normal", 2.0), ("lecun_normal", "fan_in", "truncated_normal", 1.0),
])
def test_flat_drawn_inits_equal_jax_initializers_bitwise(name, mode, distribution, gain):
    from flax import linen as nn

    from cnnjax.models.layers import get_init

    key = jax.random.key(3)
    for shape in [(5, 5, 3, 16), (120, 84), (3, 3, 16, 32)]:
        for scale in (1.0, 0.3):
            ours = get_init(name, scale)(key, shape)
            reference = nn.initializers.variance_scaling(gain * scale, mode, distribution)(key, shape)
            assert ours.shape == shape
            np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(get_init("normal", 0.01)(key, (5, 5, 3, 6)),
                                  nn.initializers.normal(0.01)(key, (5, 5, 3, 6)))
