"""The im2col lowering of `layers.Conv` equals XLA's convolution (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import get_model, layers


@pytest.mark.parametrize(
    "kernel,strides,padding",
    [((5, 5), (1, 1), "VALID"), ((3, 3), (2, 2), ((1, 1), (1, 1))), ((3, 3), (1, 1), "SAME"), ((1, 1), (2, 2), "VALID")],
)
def test_im2col_matches_xla_conv(kernel, strides, padding):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 11, 3))
    conv = layers.Conv(4, kernel, strides=strides, padding=padding, impl="xla")
    params = conv.init(jax.random.PRNGKey(1), x)
    fast = layers.Conv(4, kernel, strides=strides, padding=padding, impl="im2col")
    np.testing.assert_allclose(fast.apply(params, x), conv.apply(params, x), rtol=1e-5, atol=1e-5)
    grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(params)  # noqa: E731
    for a, b in zip(jax.tree_util.tree_leaves(grad(fast)), jax.tree_util.tree_leaves(grad(conv))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_models_give_the_same_outputs_with_either_lowering():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    slow = get_model("resnet20_cifar", 10, conv_impl="xla", widths=(4, 8, 8))
    fast = get_model("resnet20_cifar", 10, conv_impl="im2col", widths=(4, 8, 8))
    variables = slow.init(jax.random.PRNGKey(0), x, train=False)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
        fast.init(jax.random.PRNGKey(0), x, train=False))
    np.testing.assert_allclose(fast.apply(variables, x, train=False), slow.apply(variables, x, train=False),
                               rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="Unknown conv_impl 'fft'; valid choices: auto, xla, im2col"):
        get_model("lenet5", 10, conv_impl="fft").init(jax.random.PRNGKey(0), x, train=False)
