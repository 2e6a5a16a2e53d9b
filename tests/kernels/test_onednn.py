"""oneDNN convolutions (`cnnjax.kernels.onednn`) equal XLA's, values and both gradients, wherever they run."""

import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.kernels import conv as conv_kernels
from cnnjax.kernels import onednn

LINUX_X86 = sys.platform == "linux" and platform.machine() == "x86_64"
pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="oneDNN convolutions are CPU kernels")


@pytest.fixture(scope="module", autouse=True)
def built():
    if LINUX_X86:  # where the package installs oneDNN, the kernels must build: no silent skip
        assert onednn.available(), onednn.unavailable_reason()
    elif not onednn.available():
        pytest.skip(f"oneDNN unavailable: {onednn.unavailable_reason()}")


def _xla(x, k, strides, padding):
    return conv_kernels.xla_conv(x, k, strides, padding)


def _onednn(x, k, strides, padding):
    return onednn.onednn_conv(x, k, strides, conv_kernels.conv_pads(x.shape, k.shape, strides, padding))


def _value_and_grads(conv, x, k, target, strides, padding):
    loss = lambda a, b: jnp.sum(conv(a, b, strides, padding) * target)  # noqa: E731
    return jax.jit(lambda a, b: (conv(a, b, strides, padding), jax.grad(loss, argnums=(0, 1))(a, b)))(x, k)


def _close(a, b, rtol=2e-5):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert u.shape == v.shape
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0, atol=rtol * float(np.abs(v).max()))


@pytest.mark.parametrize(
    "x_shape,kernel,strides,padding",
    [
        ((4, 16, 16, 16), (3, 3, 16, 16), (1, 1), "SAME"),  # a ResNet block layer
        ((4, 16, 16, 16), (3, 3, 16, 32), (2, 2), "SAME"),  # stride 2 on an even size: pads (0, 1)
        ((3, 15, 13, 8), (3, 3, 8, 24), (2, 2), "SAME"),  # odd sizes, stride 2: pads (1, 1)
        ((4, 16, 16, 16), (1, 1, 16, 32), (2, 2), "VALID"),  # a projection shortcut
        ((2, 32, 32, 3), (7, 7, 3, 8), (2, 2), ((3, 3), (3, 3))),  # an ImageNet stem
        ((2, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID"),  # LeNet-5's second layer
        ((2, 9, 11, 4), (3, 5, 4, 5), (1, 2), ((1, 0), (2, 1))),  # rectangular, asymmetric pads
    ],
)
def test_onednn_conv_matches_xla_values_and_gradients(x_shape, kernel, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=kernel), jnp.float32)
    out_shape = jax.eval_shape(lambda: _xla(x, k, strides, padding)).shape
    target = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    _close(_value_and_grads(_onednn, x, k, target, strides, padding),
           _value_and_grads(_xla, x, k, target, strides, padding))


def test_onednn_conv_under_vmap_and_in_a_scan_matches_xla():
    """Population members (vmap, each its own kernel) and loops (lax.scan) run it too."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 2, 8, 8, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 3, 16, 16)), jnp.float32)

    def members(conv):
        loss = lambda a, b: jnp.sum(conv(a, b, (1, 1), "SAME") ** 2)  # noqa: E731
        return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))(x, k)

    def scanned(conv):
        def body(carry, xk):
            return carry + jnp.sum(conv(xk[0], xk[1], (1, 1), "SAME") ** 2), None
        return jax.jit(jax.grad(lambda a, b: jax.lax.scan(body, 0.0, (a, b))[0], argnums=(0, 1)))(x, k)

    _close(members(_onednn), members(_xla))
    _close(scanned(_onednn), scanned(_xla))


def test_auto_resnet_step_with_onednn_equals_xla_only():
    """ResNet-20's loss and gradients: `auto` (oneDNN here) against the same model with XLA's convolutions."""
    from cnnjax.models import get_model

    model = get_model("resnet20_cifar", 10)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(8, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, 8), jnp.int32)
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, train=False))()

    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])

    def step():
        return jax.value_and_grad(loss)(variables["params"])

    seen = []
    original = onednn.onednn_conv
    try:
        onednn.onednn_conv = lambda *a: seen.append(1) or original(*a)
        fast = jax.jit(conv_kernels.outside_loops(step))()
    finally:
        onednn.onednn_conv = original
    slow = jax.jit(conv_kernels.xla_only(conv_kernels.outside_loops(step)))()
    assert len(seen) == 18  # every 3x3 layer but the banded RGB stem
    _close(fast, slow, rtol=1e-4)


def test_applies_only_to_float32_ungrouped_layers_with_padding_inside_the_kernel():
    layer = ((8, 16, 16, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)))
    assert onednn.applies(*layer, jnp.float32)
    assert not onednn.applies(*layer, jnp.bfloat16)
    assert not onednn.applies(*layer, jnp.float32, feature_group_count=2)
    assert not onednn.applies((8, 16, 16, 16), (3, 3, 16, 16), (1, 1), ((3, 3), (1, 1)), jnp.float32)


def test_turned_off_it_says_why_and_auto_keeps_xla_lowerings():
    code = (
        "import jax\n"
        "from cnnjax.kernels import conv, onednn\n"
        "print(onednn.available(), onednn.unavailable_reason())\n"
        "print(conv.resolve_conv_impl('auto', (8, 16, 16, 16), (3, 3, 16, 16), (1, 1), 'SAME'))\n"
        "try:\n"
        "    conv.resolve_conv_impl('onednn', (8, 16, 16, 16), (3, 3, 16, 16), (1, 1), 'SAME')\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "from cnnjax.models import option_problems\n"
        "print(option_problems('resnet20_cifar', {'conv_impl': 'onednn'})[0])\n"
        "try:\n"
        "    onednn.onednn_conv(jax.numpy.ones((1, 4, 4, 2)), jax.numpy.ones((3, 3, 2, 2)), (1, 1), ((1, 1), (1, 1)))\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "CNNJAX_ONEDNN": "0", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == [
        "False turned off by CNNJAX_ONEDNN=0",
        "mixed",
        "conv_impl='onednn' is unavailable here: turned off by CNNJAX_ONEDNN=0",
        "model.conv_impl='onednn' is unavailable here: turned off by CNNJAX_ONEDNN=0 (valid choices: auto, xla, "
        "im2col, banded, onednn; auto uses it where it runs)",
        "oneDNN convolutions are unavailable here: turned off by CNNJAX_ONEDNN=0",
    ]


def test_a_fresh_process_can_call_it_directly():
    """The handlers register on first use, not only through `conv_impl` resolution."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "from cnnjax.kernels import conv, onednn\n"
        "x, k = jnp.ones((2, 6, 6, 4)), jnp.ones((3, 3, 4, 8))\n"
        "a = jax.jit(lambda: onednn.onednn_conv(x, k, (1, 1), ((1, 1), (1, 1))))()\n"
        "print(float(jnp.max(jnp.abs(a - conv.xla_conv(x, k, (1, 1), 'SAME')))))\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert float(out) < 1e-5


def test_a_missing_onednn_is_named_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("CNNJAX_ONEDNN_ROOT", str(tmp_path))
    monkeypatch.setattr(onednn.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(onednn.sys, "base_prefix", str(tmp_path))
    reason = onednn._load()
    assert reason.startswith("oneDNN not found (pip install onednn-cpu-gomp onednn-devel-cpu-gomp")


def test_export_keeps_only_xla_operations():
    """A `jax.export` artifact must run without this process's custom calls."""
    from cnnjax.models import layers

    module = layers.Conv(16, (3, 3))
    x = jnp.ones((2, 8, 8, 16), jnp.float32)
    params = jax.jit(lambda: module.init(jax.random.PRNGKey(0), x))()
    text = jax.jit(lambda v: module.apply(params, v)).lower(x).as_text()
    assert "cnnjax_onednn_conv_forward" in text  # auto takes oneDNN here
    exported = jax.export.export(jax.jit(conv_kernels.xla_only(lambda v: module.apply(params, v))))(x)
    assert "cnnjax_onednn" not in exported.mlir_module()
    np.testing.assert_allclose(np.asarray(exported.call(x)), np.asarray(module.apply(params, x)), rtol=2e-5, atol=1e-5)


def test_banded_layers_evaluate_with_onednn_and_train_with_banded_matmuls():
    """`mixed_conv(plain='onednn', differentiated='banded')`: `auto` for LeNet-style layers."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(4, 14, 14, 6)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(5, 5, 6, 16)), jnp.float32)
    mixed = lambda v, w: conv_kernels.mixed_conv(v, w, (1, 1), "VALID", "onednn", "banded")  # noqa: E731
    banded = lambda v, w: conv_kernels.banded_conv(v, w, "VALID")  # noqa: E731
    assert "cnnjax_onednn_conv_forward" in jax.jit(mixed).lower(x, k).as_text()
    _close(jax.jit(mixed)(x, k), _xla(x, k, (1, 1), "VALID"))
    loss = lambda f: lambda v, w: jnp.sum(jnp.sin(f(v, w)))  # noqa: E731
    grad_mixed = jax.jit(jax.value_and_grad(loss(mixed), (0, 1)))
    (value_m, grads_m), (value_b, grads_b) = grad_mixed(x, k), jax.jit(jax.value_and_grad(loss(banded), (0, 1)))(x, k)
    assert float(value_m) == float(value_b)  # differentiated: the banded program, bit for bit
    for got, want in zip(grads_m, grads_b, strict=True):
        np.testing.assert_array_equal(got, want)
    assert "cnnjax_onednn" not in grad_mixed.lower(x, k).as_text()
