"""Building blocks shared by the model families: init schemes, activations, pooling.

Every choice here is selected by a string so that configs can name it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.kernels import conv as conv_kernels
from cnnjax.kernels import pool as pool_kernels

Initializer = Callable[..., jax.Array]

INIT_CHOICES = (
    "zeros",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "he_normal",
    "he_uniform",
    "he_normal_fan_out",
    "lecun_normal",
)

ACTIVATION_CHOICES = ("relu", "tanh", "sigmoid", "leaky_relu", "gelu")

POOLING_CHOICES = ("max", "avg", "stochastic")

MAX_POOL_IMPL_CHOICES = ("auto", "xla", "tiles")


def get_init(name: str, scale: float = 1.0) -> Initializer:
    """Returns a kernel initializer by name.

    Args:
      name: one of `INIT_CHOICES`.
      scale: the standard deviation for `normal`; a multiplier on the variance
        for the variance-scaling schemes (1.0 gives the textbook scheme).
    """
    if name == "zeros":
        return nn.initializers.zeros
    if name == "normal":
        return _flat_normal(scale)
    schemes = {
        # Glorot & Bengio 2010: Var = 2 / (fan_in + fan_out).
        "xavier_uniform": ("fan_avg", "uniform", 1.0),
        "xavier_normal": ("fan_avg", "truncated_normal", 1.0),
        # He et al. 2015: Var = 2 / fan (the factor 2 compensates ReLU's halving).
        "he_normal": ("fan_in", "truncated_normal", 2.0),
        "he_uniform": ("fan_in", "uniform", 2.0),
        "he_normal_fan_out": ("fan_out", "truncated_normal", 2.0),
        "lecun_normal": ("fan_in", "truncated_normal", 1.0),
    }
    if name not in schemes:
        raise ValueError(f"Unknown init {name!r}; valid choices: {', '.join(INIT_CHOICES)}")
    mode, distribution, gain = schemes[name]
    return variance_scaling(gain * scale, mode, distribution)


# The initialisers below give the same values as `jax.nn.initializers`' (tested
# bitwise) but draw one flat vector and reshape it: XLA's CPU compiler takes
# about twice as long on a random draw of a 4-D shape, and a model's init
# compiles once per run, per population and per test.
def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """`jax.nn.initializers.variance_scaling` (in_axis=-2, out_axis=-1), drawn flat."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2:
            return nn.initializers.variance_scaling(scale, mode, distribution)(key, shape, dtype)
        receptive = math.prod(shape) / shape[-2] / shape[-1]
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        flat = (math.prod(shape),)
        if distribution == "truncated_normal":
            stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
            draw = jax.random.truncated_normal(key, -2, 2, flat, dtype) * stddev
        elif distribution == "normal":
            draw = jax.random.normal(key, flat, dtype) * jnp.sqrt(variance)
        else:
            draw = jax.random.uniform(key, flat, dtype, -1) * jnp.sqrt(3 * variance)
        return draw.reshape(shape)

    return init


def _flat_normal(stddev: float) -> Initializer:
    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        return (jax.random.normal(key, (math.prod(shape),), dtype) * jnp.array(stddev, dtype)).reshape(shape)

    return init


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns an activation function by name (one of `ACTIVATION_CHOICES`)."""
    table = {
        "relu": nn.relu,
        "tanh": jnp.tanh,
        "sigmoid": nn.sigmoid,
        "leaky_relu": nn.leaky_relu,
        "gelu": nn.gelu,
    }
    if name not in table:
        raise ValueError(
            f"Unknown activation {name!r}; valid choices: {', '.join(ACTIVATION_CHOICES)}"
        )
    return table[name]


def pool(
    x: jax.Array,
    kind: str,
    window: int,
    stride: int | None = None,
    padding: Any = "VALID",
    *,
    train: bool = False,
) -> jax.Array:
    """Spatial pooling over NHWC input; `kind` is one of `POOLING_CHOICES`.

    `stochastic` creates a `StochasticPool` submodule, so it must be called from
    inside a compact Linen method; it draws from the `dropout` rng stream when
    `train` is true.
    """
    stride = window if stride is None else stride
    if kind == "max":
        return max_pool(x, window, stride, padding)
    if kind == "avg":
        return nn.avg_pool(x, (window, window), (stride, stride), padding)
    if kind == "stochastic":
        return StochasticPool(window, stride, padding)(x, train=train)
    raise ValueError(f"Unknown pooling {kind!r}; valid choices: {', '.join(POOLING_CHOICES)}")


def max_pool(x: jax.Array, window: int, stride: int | None = None, padding: Any = "VALID",
             impl: str = "auto") -> jax.Array:
    """Max pooling over NHWC input, equal to `nn.max_pool` in values and gradients.

    `impl`: `xla` (`nn.max_pool`: reduce-window, select-and-scatter gradient),
    `tiles` (non-overlapping windows only: a max-reduction over each tile, and
    a gradient that routes each window's cotangent to its first
    maximal element, as select-and-scatter does, from a small int8 index saved in
    the forward pass), or `auto` (`tiles` on CPU where it applies, else `xla`).
    On CPU `tiles` is several times faster: XLA lowers the reduce-window
    gradient to a scatter with index arrays the size of the input.
    """
    stride = window if stride is None else stride
    if impl not in MAX_POOL_IMPL_CHOICES:
        raise ValueError(f"Unknown max-pool impl {impl!r}; valid choices: {', '.join(MAX_POOL_IMPL_CHOICES)}")
    tiles_apply = stride == window and padding == "VALID" and x.ndim == 4
    if impl == "auto":
        impl = "tiles" if tiles_apply and jax.default_backend() == "cpu" else "xla"
    if impl == "xla":
        return nn.max_pool(x, (window, window), (stride, stride), padding)
    if not tiles_apply:
        raise ValueError("max_pool impl 'tiles' needs stride == window, VALID padding and NHWC input")
    out_h, out_w = x.shape[1] // window, x.shape[2] // window
    # VALID drops the last rows/columns that do not fill a window; their gradient is zero.
    return pool_kernels.max_pool_tiles(x[:, : out_h * window, : out_w * window], window)




def _window_stack(x: jax.Array, window: int, stride: int, padding: Any) -> jax.Array:
    """Gathers every pooling window of NHWC `x` into a trailing axis of size window**2."""
    if padding == "SAME":
        out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
        pad_h = max(0, (out_h - 1) * stride + window - x.shape[1])
        pad_w = max(0, (out_w - 1) * stride + window - x.shape[2])
        padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    if padding != "VALID":
        # Zero padding is harmless here: a zero carries no probability mass.
        x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    out_h = (x.shape[1] - window) // stride + 1
    out_w = (x.shape[2] - window) // stride + 1
    # One strided slice per window offset keeps this valid for overlapping windows too.
    slices = [
        x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
        for i in range(window)
        for j in range(window)
    ]
    return jnp.stack(slices, axis=-1)


def stochastic_pool(
    x: jax.Array,
    window: int,
    stride: int | None = None,
    padding: Any = "VALID",
    *,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Stochastic pooling (Zeiler & Fergus 2013) over NHWC input.

    Within each window the activations a_i define probabilities
    p_i = a_i / sum_j a_j. With `rng` one activation per window is sampled from
    p (training); without it the result is the expectation sum_i p_i a_i
    (the paper's test-time rule). The inputs are meant to be non-negative
    (post-ReLU); negative values get zero probability. All-zero windows give 0.
    """
    stride = window if stride is None else stride
    windows = _window_stack(x, window, stride, padding)
    mass = jnp.maximum(windows, 0.0)
    total = jnp.sum(mass, axis=-1, keepdims=True)
    has_mass = total > 0
    if rng is None:
        safe_total = jnp.where(has_mass, total, 1.0)
        expected = jnp.sum(mass * windows, axis=-1, keepdims=True) / safe_total
        return jnp.where(has_mass, expected, 0.0)[..., 0]
    positive = mass > 0
    logits = jnp.log(jnp.where(positive, mass, 1.0))
    logits = jnp.where(positive, logits, -jnp.inf)
    # An all-zero window samples uniformly, which returns its (zero) value.
    logits = jnp.where(has_mass, logits, 0.0)
    index = jax.random.categorical(rng, jax.lax.stop_gradient(logits), axis=-1)
    return jnp.take_along_axis(windows, index[..., None], axis=-1)[..., 0]


class StochasticPool(nn.Module):
    """Stochastic pooling layer; samples with the `dropout` rng stream in training."""

    window: int
    stride: int | None = None
    padding: Any = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        rng = self.make_rng("dropout") if train else None
        return stochastic_pool(x, self.window, self.stride, self.padding, rng=rng)


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """Averages NHWC `x` onto a fixed spatial grid (PyTorch's adaptive_avg_pool2d bins).

    Bin i along an axis of length n covers [floor(i n / m), ceil((i + 1) n / m)),
    so a smaller map is replicated and a larger one is averaged; a head after
    this keeps its parameter count whatever the input size.
    """
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = output_size
    if (height, width) == (out_h, out_w):
        return x
    if height % out_h == 0 and width % out_w == 0:
        return nn.avg_pool(x, (height // out_h, width // out_w), (height // out_h, width // out_w))

    def bins(n: int, m: int) -> list[tuple[int, int]]:
        return [((i * n) // m, -(-((i + 1) * n) // m)) for i in range(m)]

    rows = [
        jnp.stack(
            [jnp.mean(x[:, r0:r1, c0:c1], axis=(1, 2)) for c0, c1 in bins(width, out_w)], axis=1
        )
        for r0, r1 in bins(height, out_h)
    ]
    return jnp.stack(rows, axis=1)


def max_pool_ceil(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """Max pooling with PyTorch's `ceil_mode=True` output size (GoogLeNet uses it)."""
    sizes = []
    for n in (x.shape[1], x.shape[2]):
        out = -(-(n + 2 * padding - window) // stride) + 1
        # A last window must start inside the (left-padded) input, as in PyTorch.
        if (out - 1) * stride >= n + padding:
            out -= 1
        sizes.append((padding, max(0, (out - 1) * stride + window - n - padding)))
    return nn.max_pool(x, (window, window), (stride, stride), padding=tuple(sizes))


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """Cross-channel LRN of Krizhevsky et al. 2012 (section 3.3) over NHWC input.

    b_c = a_c / (k + alpha * sum_{|c'-c| <= size//2} a_c'^2) ** beta, with the
    paper's constants; alpha is not divided by `size` (PyTorch's layer does).
    """
    squares = jnp.square(x)
    half = size // 2
    padded = jnp.pad(squares, ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
    channels = x.shape[-1]
    window_sum = sum(padded[..., i : i + channels] for i in range(size))
    return x / (k + alpha * window_sum) ** beta


def batch_norm(train: bool, **kwargs) -> nn.BatchNorm:
    """BatchNorm with the momentum the reference CNNs use (0.9, not Linen's 0.99).

    Running statistics follow `r <- 0.9 r + 0.1 batch_stat` and live in the
    `batch_stats` collection; evaluation (`train=False`) uses them.
    """
    kwargs.setdefault("momentum", 0.9)
    kwargs.setdefault("epsilon", 1e-5)
    return nn.BatchNorm(use_running_average=not train, **kwargs)


def repeat_blocks(
    block: Callable[..., nn.Module], repeats: int, x: jax.Array, *, name: str, scan: bool = True
) -> jax.Array:
    """Applies `repeats` identical blocks in sequence, under `nn.scan` by default.

    Scanning traces and compiles one block whatever `repeats` is, so compile time
    stays flat in depth; the block's `params` and `batch_stats` get a leading
    axis of length `repeats`. `block` is a Module class or partial whose
    `__call__(x, _)` returns `(y, None)`; it must be called from a compact method.
    """
    if repeats <= 0:
        return x
    if scan:
        stack = nn.scan(
            block,
            variable_axes={"params": 0, "batch_stats": 0},
            split_rngs={"params": True, "dropout": True},
            length=repeats,
        )
        x, _ = stack(name=name)(x, None)
        return x
    for index in range(repeats):
        x, _ = block(name=f"{name}{index}")(x, None)
    return x


class Dropout(nn.Module):
    """Inverted dropout whose rate may be a traced value.

    Same sampling as `nn.Dropout` (one Bernoulli keep-mask from the 'dropout'
    rng, survivors scaled by 1/keep), but the rate can be an array, so a
    population can carry one dropout rate per member under `vmap`.
    """

    rate: Any = 0.0
    deterministic: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
            return x
        keep = 1.0 - jnp.asarray(self.rate, jnp.float32)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
        return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))



class Conv(nn.Module):
    """A drop-in for `nn.Conv` (same `kernel`/`bias` parameters) with a choice of lowering.

    `impl`: `xla` (lax.conv), `im2col` (shifted slices + matmul), `banded`
    (row segments times a banded matrix made from the kernel,
    `cnnjax.kernels.conv.banded_conv`; a strided or grouped convolution falls back to
    im2col or xla), `onednn` (oneDNN's CPU convolutions as XLA custom calls,
    `cnnjax.kernels.onednn`; a bfloat16 or grouped convolution falls back to
    xla), or `auto` (`cnnjax.kernels.conv.resolve_conv_impl`: on CPU `banded`
    where it applies, else `onednn` where it is available, else im2col where a
    gradient is taken and XLA's convolution where none is; `xla` on
    accelerators). Parameters and results are the same either way, so the
    choice is purely about speed.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    feature_group_count: int = 1
    kernel_init: Initializer = variance_scaling(1.0, "fan_in", "truncated_normal")
    bias_init: Initializer = nn.initializers.zeros
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, cin // self.feature_group_count, self.features))
        strides = tuple(self.strides) if not isinstance(self.strides, int) else (self.strides,) * 2
        impl = conv_kernels.resolve_conv_impl(self.impl, x.shape, kernel.shape, strides, self.padding,
                                              self.feature_group_count, x.dtype)
        if impl == "onednn":
            y = conv_kernels.onednn_conv(x, kernel.astype(x.dtype), strides, self.padding)
        elif impl == "banded_mixed":
            y = conv_kernels.mixed_conv(x, kernel.astype(x.dtype), strides, self.padding, "onednn", "banded")
        elif impl == "banded" and strides == (1, 1) and self.feature_group_count == 1:
            y = conv_kernels.banded_conv(x, kernel.astype(x.dtype), self.padding)
        elif impl in ("im2col", "banded") and self.feature_group_count == 1:
            y = conv_kernels.im2col_conv(x, kernel.astype(x.dtype), strides, self.padding)
        elif impl == "mixed" and self.feature_group_count == 1:
            y = conv_kernels.mixed_conv(x, kernel.astype(x.dtype), strides, self.padding)
        else:
            y = conv_kernels.xla_conv(x, kernel.astype(x.dtype), strides, self.padding, self.feature_group_count)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(y.dtype)
        return y
