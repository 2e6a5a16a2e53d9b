"""The lowerings of `layers.Conv` (im2col, banded) and of max pooling (tiles) equal XLA's, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnnjax.kernels import conv as conv_kernels
from cnnjax.kernels import onednn
from cnnjax.models import get_model, layers


def _outputs_and_grads(slow, fast, x):
    """One compiled program: both modules' outputs and gradients (parameters and input) at slow's init."""

    @jax.jit
    def run(x):
        params = slow.init(jax.random.PRNGKey(1), x)
        results = []
        for module in (slow, fast):
            loss = lambda p, v, m=module: jnp.sum(m.apply(p, v) ** 2)  # noqa: E731
            results.append((module.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)))
        return results

    return run(x)


@pytest.mark.parametrize(
    "kernel,strides,padding",
    [((5, 5), (1, 1), "VALID"), ((3, 3), (2, 2), ((1, 1), (1, 1))), ((3, 3), (1, 1), "SAME"), ((1, 1), (2, 2), "VALID")],
)
def test_im2col_matches_xla_conv(kernel, strides, padding, assert_trees_equal):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 11, 3))
    conv = layers.Conv(4, kernel, strides=strides, padding=padding, impl="xla")
    params = conv.init(jax.random.PRNGKey(1), x)
    fast = layers.Conv(4, kernel, strides=strides, padding=padding, impl="im2col")
    np.testing.assert_allclose(fast.apply(params, x), conv.apply(params, x), rtol=1e-5, atol=1e-5)
    grad = lambda m: jax.grad(lambda p: jnp.sum(m.apply(p, x) ** 2))(params)  # noqa: E731
    assert_trees_equal(grad(fast), grad(conv), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "shape,kernel,padding,features",
    [((2, 10, 10, 1), (5, 5), "VALID", 6), ((2, 7, 9, 2), (3, 2), ((1, 2), (0, 1)), 3)],
)
def test_banded_matches_xla_conv(shape, kernel, padding, features, assert_trees_equal):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    (slow_y, slow_grads), (fast_y, fast_grads) = _outputs_and_grads(
        layers.Conv(features, kernel, padding=padding, impl="xla"),
        layers.Conv(features, kernel, padding=padding, impl="banded"), x)
    np.testing.assert_allclose(fast_y, slow_y, rtol=1e-5, atol=1e-5)
    assert_trees_equal(fast_grads, slow_grads, rtol=1e-4, atol=1e-4)


def test_banded_falls_back_for_strided_convolutions():
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 2)).astype(np.float32)
    (slow_y, _), (fast_y, _) = _outputs_and_grads(
        layers.Conv(3, (3, 3), strides=(2, 2), padding="SAME", impl="xla"),
        layers.Conv(3, (3, 3), strides=(2, 2), padding="SAME", impl="banded"), x)
    np.testing.assert_allclose(fast_y, slow_y, rtol=1e-5, atol=1e-5)


def test_auto_picks_banded_only_for_small_layers():
    # LeNet-5's two convolutions and a CIFAR RGB stem: few input channels.
    assert conv_kernels.banded_applies((128, 32, 32, 1), (5, 5, 1, 6), (1, 1), "VALID")
    assert conv_kernels.banded_applies((128, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID")
    assert conv_kernels.banded_applies((128, 32, 32, 3), (3, 3, 3, 16), (1, 1), ((1, 1), (1, 1)))
    # Many input channels; strided; blocks of one column (31 output columns, a 2x2 kernel).
    assert not conv_kernels.banded_applies((128, 8, 8, 64), (3, 3, 64, 64), (1, 1), ((1, 1), (1, 1)))
    assert not conv_kernels.banded_applies((128, 14, 14, 6), (5, 5, 6, 16), (2, 2), "VALID")
    assert not conv_kernels.banded_applies((128, 32, 32, 3), (2, 2, 3, 24), (1, 1), "VALID")
    assert [conv_kernels.banded_block_width(n, 5) for n in (28, 10, 7)] == [4, 5, 7]
    if jax.default_backend() == "cpu":
        banded = "banded_mixed" if onednn.available() else "banded"  # oneDNN where no gradient is taken
        assert conv_kernels.resolve_conv_impl("auto", (128, 32, 32, 1), (5, 5, 1, 6)) == banded
        expected = "onednn" if onednn.available() else "mixed"
        assert conv_kernels.resolve_conv_impl("auto", (128, 32, 32, 16), (3, 3, 16, 16), (1, 1), "SAME") == expected


@pytest.mark.parametrize("block", [1, 2, 3, 4, 8])
def test_banded_blocks_of_any_width_match_xla_conv(block):
    # 8 output columns: blocks of 3 need padding columns; a block of 8 is one band over the row.
    # Segments are whole chunks of `block` columns: blocks of 4 span exactly 2 chunks (LeNet-5's
    # first layer), blocks of 2 and 3 span 3 chunks with zero rows in the matrix past the span.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 12, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 5, 2, 3)).astype(np.float32)
    conv = lambda v, k: jax.lax.conv_general_dilated(v, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))  # noqa: E731
    banded = lambda v, k: conv_kernels.banded_conv(v, k, "VALID", block)  # noqa: E731

    @jax.jit
    def run(x, kernel):
        return [(f(x, kernel), jax.grad(lambda v, k, f=f: jnp.sum(f(v, k) ** 2), argnums=(0, 1))(x, kernel))
                for f in (banded, conv)]

    (fast_y, fast_grads), (slow_y, slow_grads) = run(x, kernel)
    np.testing.assert_allclose(fast_y, slow_y, rtol=1e-5, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
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
    with pytest.raises(ValueError, match="Unknown conv_impl 'fft'; valid choices: auto, xla, im2col, banded"):
        get_model("lenet5", 10, conv_impl="fft").init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("shape,window", [((2, 8, 8, 3), 2), ((2, 7, 8, 2), 3)])
def test_max_pool_tiles_equals_reduce_window_bitwise_with_ties(shape, window):
    # Post-ReLU values rounded to halves: many windows hold equal maxima (all zeros, most often),
    # and the gradient must go where select-and-scatter sends it, to the first of them.
    rng = np.random.default_rng(0)
    x = (np.round(2 * np.maximum(rng.normal(size=shape), 0)) / 2).astype(np.float32)
    tiles = lambda v: layers.max_pool(v, window, impl="tiles")  # noqa: E731
    xla = lambda v: nn.max_pool(v, (window, window), (window, window))  # noqa: E731

    @jax.jit
    def run(x, cotangent):
        (tiles_y, tiles_vjp), (xla_y, xla_vjp) = jax.vjp(tiles, x), jax.vjp(xla, x)
        return tiles_y, xla_y, tiles_vjp(cotangent)[0], xla_vjp(cotangent)[0], jax.vmap(tiles)(x[None])[0]

    out_shape = (shape[0], shape[1] // window, shape[2] // window, shape[3])
    tiles_y, xla_y, tiles_dx, xla_dx, vmapped_y = run(x, rng.normal(size=out_shape).astype(np.float32))
    np.testing.assert_array_equal(tiles_y, xla_y)
    np.testing.assert_array_equal(tiles_dx, xla_dx)
    np.testing.assert_array_equal(vmapped_y, xla_y)


def test_max_pool_choices():
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float32)
    # Overlapping windows keep XLA's lowering under `auto`; `tiles` refuses them.
    np.testing.assert_array_equal(jax.jit(lambda v: layers.max_pool(v, 3, 2))(x),
                                  jax.jit(lambda v: nn.max_pool(v, (3, 3), (2, 2)))(x))
    with pytest.raises(ValueError, match="needs stride == window"):
        layers.max_pool(x, 3, 2, impl="tiles")
    with pytest.raises(ValueError, match="Unknown max-pool impl 'fft'; valid choices: auto, xla, tiles"):
        layers.max_pool(x, 2, impl="fft")


def test_cifar_resnet_unrolled_blocks_equal_the_scan_loop(monkeypatch):
    # Same parameters (stacked per stage), same values and gradients, whether the
    # repeated blocks compile as a loop or unrolled (the CPU default).
    if jax.default_backend() == "cpu":
        assert conv_kernels.unroll_blocks(8) == 8
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    labels = jnp.array([1, 3])
    model = get_model("resnet20_cifar", 10, widths=(4, 8, 8))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert variables["params"]["stage1_rest"]["Conv_0"]["kernel"].shape == (2, 3, 3, 4, 4)

    def loss_and_grads():
        def loss(params):
            logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
        # Equality, not speed, is tested: XLA's cheap compile settings halve the compile time.
        compiled = jax.jit(jax.value_and_grad(loss)).lower(variables["params"]).compile(
            compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
        return compiled(variables["params"])

    monkeypatch.setattr(conv_kernels, "unroll_blocks", lambda repeats: repeats)
    unrolled = loss_and_grads()
    monkeypatch.setattr(conv_kernels, "unroll_blocks", lambda repeats: 1)
    looped = loss_and_grads()
    for a, b in zip(jax.tree_util.tree_leaves(unrolled), jax.tree_util.tree_leaves(looped)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strides,padding", [((1, 1), "SAME"), ((2, 2), ((1, 1), (1, 1))), ((1, 1), "VALID")])
def test_mixed_conv_is_xla_forward_and_im2col_when_differentiated(strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 9, 9, 16)).astype(np.float32))
    kernel = jnp.asarray(rng.normal(size=(3, 3, 16, 8)).astype(np.float32))
    mixed = lambda v, k: conv_kernels.mixed_conv(v, k, strides, padding)  # noqa: E731
    im2col = lambda v, k: conv_kernels.im2col_conv(v, k, strides, padding)  # noqa: E731
    # Forward: XLA's convolution, equal to im2col's within float tolerance.
    np.testing.assert_allclose(jax.jit(mixed)(x, kernel), im2col(x, kernel), rtol=1e-5, atol=1e-4)
    assert "convolution" in jax.jit(mixed).lower(x, kernel).as_text()
    # Differentiated: im2col's forward and backward, bit for bit, and no convolution op left.
    loss = lambda f: lambda v, k: jnp.sum(jnp.sin(f(v, k)))  # noqa: E731
    grad_mixed = jax.jit(jax.value_and_grad(loss(mixed), (0, 1)))
    grad_im2col = jax.jit(jax.value_and_grad(loss(im2col), (0, 1)))
    (value_m, grads_m), (value_i, grads_i) = grad_mixed(x, kernel), grad_im2col(x, kernel)
    assert float(value_m) == float(value_i)
    for got, want in zip(grads_m, grads_i, strict=True):
        np.testing.assert_array_equal(got, want)
    assert "convolution" not in grad_mixed.lower(x, kernel).as_text()
    # Per-member kernels under vmap (populations) take the same paths.
    stacked = jnp.stack([kernel, 2 * kernel])
    np.testing.assert_allclose(jax.vmap(mixed, (None, 0))(x, stacked)[1], im2col(x, 2 * kernel), rtol=1e-5, atol=2e-4)
    member_grads = jax.vmap(jax.grad(loss(mixed), 1), (None, 0))(x, stacked)
    np.testing.assert_allclose(member_grads[0], grads_i[1], rtol=1e-5, atol=1e-4)


def test_auto_without_onednn_is_xla_in_a_step_traced_outside_loops_and_mixed_elsewhere():
    if jax.default_backend() != "cpu":
        pytest.skip("auto is XLA's convolution everywhere on accelerators")
    layer = ((128, 32, 32, 16), (3, 3, 16, 16), (1, 1), "SAME")
    seen = []

    def step(x):
        seen.append(conv_kernels.resolve_conv_impl("auto", *layer))
        seen.append(conv_kernels.resolve_conv_impl("auto", (128, 32, 32, 1), (5, 5, 1, 6)))
        seen.append(conv_kernels.resolve_conv_impl("onednn", *layer))
        return x

    jax.jit(conv_kernels.xla_only(conv_kernels.outside_loops(step)))(jnp.zeros(2))
    jax.jit(conv_kernels.xla_only(step))(jnp.ones(2))
    # banded layers keep banded either way; an explicit onednn becomes xla
    assert seen == ["xla", "banded", "xla", "mixed", "banded", "xla"]
    with pytest.raises(RuntimeError):  # the flags are reset when tracing fails
        conv_kernels.xla_only(conv_kernels.outside_loops(lambda: (_ for _ in ()).throw(RuntimeError("boom"))))()
    seen.clear()
    step(None)
    assert seen[:2] == (["onednn", "banded_mixed"] if onednn.available() else ["mixed", "banded"])


def test_auto_on_accelerators_batches_per_member_kernels_as_matmuls(monkeypatch):
    """On a GPU, auto is XLA's convolution except in a population's vmapped step (vmap and chunked plans)."""
    from cnnjax.tuning import plans

    lenet_conv = ((32, 32, 32, 1), (5, 5, 1, 6), (1, 1), "VALID")
    resnet_conv = ((32, 32, 32, 16), (3, 3, 16, 16), (1, 1), "SAME")
    seen = []

    def member_step(state, alive, key, permutation, index, images, labels):
        seen.append(tuple(conv_kernels.resolve_conv_impl("auto", *layer) for layer in (lenet_conv, resnet_conv))
                    + (conv_kernels.resolve_conv_impl("auto", *resnet_conv, feature_group_count=2),))
        return state, alive, {}

    args = (jnp.zeros((4, 2)), jnp.ones(4, bool), jnp.zeros((4, 2), jnp.uint32), jnp.zeros((4, 8), jnp.int32),
            jnp.asarray(0), jnp.zeros((8, 2)), jnp.zeros(8, jnp.int32))
    cpu_auto = (conv_kernels.resolve_conv_impl("auto", *lenet_conv), conv_kernels.resolve_conv_impl("auto", *resnet_conv))
    jax.eval_shape(plans.map_members(member_step, plans.Plan("vmap"), False), *args)
    assert seen[-1][:2] == cpu_auto  # CPU: members_batched changes nothing
    monkeypatch.setattr(conv_kernels.jax, "default_backend", lambda: "gpu")
    seen.clear()
    for plan in (plans.Plan("vmap"), plans.Plan("chunked", 2), plans.Plan("sequential")):
        jax.eval_shape(plans.map_members(member_step, plan, False), *args)
    assert seen == [("banded", "im2col", "xla")] * 2 + [("xla", "xla", "xla")]
    assert conv_kernels.resolve_conv_impl("auto", *resnet_conv) == "xla"  # flag reset after tracing
    monkeypatch.setattr(conv_kernels.jax, "default_backend", lambda: "tpu")  # not measured there: XLA's
    seen.clear()
    jax.eval_shape(plans.map_members(member_step, plans.Plan("vmap"), False), *args)
    assert seen == [("xla", "xla", "xla")]
