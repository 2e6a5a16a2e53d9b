"""Building blocks shared by the model families: init schemes, activations, pooling.

Every choice here is selected by a string so that configs can name it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

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
    return _max_pool_tiles(x[:, : out_h * window, : out_w * window], window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_tiles(x: jax.Array, window: int) -> jax.Array:
    return _max_pool_tiles_fwd(x, window)[0]


def _max_pool_tiles_fwd(x: jax.Array, window: int):
    batch, height, width, channels = x.shape
    # A reduction, not an elementwise maximum of slices: XLA then writes the pooled
    # map once instead of recomputing it (and the layers before it) inside every
    # slice the next convolution takes of it.
    pooled = x.reshape(batch, height // window, window, width // window, window, channels).max(axis=(2, 4))
    corners = [x[:, i::window, j::window] for i in range(window) for j in range(window)]
    index_dtype = jnp.int8 if window * window <= 127 else jnp.int32
    # Row-major index of the first element equal to the maximum (ties go to the first).
    first = jnp.full(pooled.shape, window * window - 1, index_dtype)
    for index in range(window * window - 2, -1, -1):
        first = jnp.where(corners[index] == pooled, jnp.asarray(index, index_dtype), first)
    return pooled, first


def _max_pool_tiles_bwd(window: int, first: jax.Array, cotangent: jax.Array):
    batch, height, width, channels = cotangent.shape
    position = window * jnp.arange(window)[:, None] + jnp.arange(window)[None, :]
    chosen = first[:, :, None, :, None, :] == position.astype(first.dtype)[None, None, :, None, :, None]
    grad = jnp.where(chosen, cotangent[:, :, None, :, None, :], jnp.zeros((), cotangent.dtype))
    return (grad.reshape(batch, height * window, width * window, channels),)


_max_pool_tiles.defvjp(_max_pool_tiles_fwd, _max_pool_tiles_bwd)


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


CONV_IMPL_CHOICES = ("auto", "xla", "im2col", "banded")

# `banded` (see `banded_conv`) trades arithmetic for memory traffic: it multiplies
# wide row segments by a banded matrix, doing (block + kw - 1) / kw times
# im2col's multiply-adds while reading each input element about kh times instead
# of kh * kw. That pays on CPU for convolutions with few input channels (LeNet's
# 5x5 convolutions, an RGB stem), where im2col's patch matrix, not the
# arithmetic, is the cost; the limits below keep it to such layers.
BANDED_MAX_ROW_FEATURES = 32  # kernel width * input channels
BANDED_MAX_MATRIX_SIZE = 1 << 16  # elements of the banded matrix


def _conv_pads(x_shape, kernel_shape, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return [tuple(p) for p in jax.lax.padtype_to_pads(x_shape[1:3], kernel_shape[:2], strides, padding)]
    return [tuple(p) for p in padding]


def banded_applies(x_shape, kernel_shape, strides, padding, feature_group_count: int = 1) -> bool:
    """Whether `auto` lowers this convolution to `banded_conv` on CPU (see `BANDED_*`)."""
    kh, kw, cin, cout = kernel_shape
    if tuple(strides) != (1, 1) or feature_group_count != 1 or kw == 1:
        return False
    pads = _conv_pads(x_shape, kernel_shape, (1, 1), padding)
    out_w = x_shape[2] + sum(pads[1]) - kw + 1
    if out_w <= 0:
        return False
    block = banded_block_width(out_w, kw)
    span = block + kw - 1
    # A block of one column is im2col with another patch layout: leave that to im2col.
    return (block > 1 and kw * cin <= BANDED_MAX_ROW_FEATURES
            and kh * span * cin * block * cout <= BANDED_MAX_MATRIX_SIZE)


def _resolve_impl(impl: str, x_shape=None, kernel_shape=None, strides=(1, 1), padding="VALID",
                  feature_group_count: int = 1) -> str:
    if impl not in CONV_IMPL_CHOICES:
        raise ValueError(f"Unknown conv_impl {impl!r}; valid choices: {', '.join(CONV_IMPL_CHOICES)}")
    if impl == "auto":
        # XLA's CPU convolutions (and their vmapped, grouped form) are slow; a
        # matmul over shifted slices is faster there, and for small layers a
        # banded matmul faster still. Accelerators keep cuDNN/XLA.
        if jax.default_backend() != "cpu":
            return "xla"
        if x_shape is not None and banded_applies(x_shape, kernel_shape, strides, padding, feature_group_count):
            return "banded"
        return "im2col"
    return impl


def banded_block_width(out_w: int, kw: int) -> int:
    """Output columns per block of `banded_conv`: the divisor of `out_w` nearest kw - 1.

    Blocks of about kw - 1 columns keep the extra multiply-adds under 2x, and a
    divisor needs no padding columns.
    """
    divisors = [d for d in range(1, out_w + 1) if out_w % d == 0]
    return min(divisors, key=lambda d: (abs(d - (kw - 1)), -d))


def banded_matrix(kernel: jax.Array, width: int) -> jax.Array:
    """The HWIO `kernel` as a (kh * width * c_in, out_w * c_out) banded matrix.

    Entry ((i, w, c), (o, d)) is `kernel[i, w - o, c, d]` where 0 <= w - o < kw
    and zero elsewhere: column block o holds the kernel shifted to output column o.
    """
    kh, kw, cin, cout = kernel.shape
    out_w = width - kw + 1
    shifted = [jnp.pad(kernel, ((0, 0), (o, width - kw - o), (0, 0), (0, 0))) for o in range(out_w)]
    return jnp.stack(shifted, axis=3).reshape(kh * width * cin, out_w * cout)


@jax.custom_vjp
def _written_gradient(x: jax.Array) -> jax.Array:
    """Identity whose backward pass writes the cotangent out through a matmul.

    Multiplying by the (channels x channels) identity matrix is exact for finite
    values; the matmul only stops XLA from fusing the computation of the
    cotangent (for a convolution's input: a sum of shifted slices) into its
    consumer. Without it the gradient of a preceding max pool, which reads each
    cotangent element once per window position, recomputes that sum 4 times.
    """
    return x


def _written_gradient_fwd(x):
    return x, None


def _written_gradient_bwd(_, cotangent):
    channels = cotangent.shape[-1]
    eye = jnp.eye(channels, dtype=cotangent.dtype)
    written = jnp.matmul(cotangent.reshape(-1, channels), eye, precision=jax.lax.Precision.HIGHEST)
    return (written.reshape(cotangent.shape),)


_written_gradient.defvjp(_written_gradient_fwd, _written_gradient_bwd)


def banded_conv(x: jax.Array, kernel: jax.Array, padding: Any, block: int | None = None) -> jax.Array:
    """Stride-1 2-D convolution as one matmul of row segments by a banded matrix.

    Equals `lax.conv_general_dilated` (stride 1, no dilation, one group) on NHWC
    input and an HWIO kernel. The output is cut into blocks of `block` columns
    (default `banded_block_width`); the block at output (b, y, columns
    q*block ...) is the kh input rows y..y+kh-1 over the block's block + kw - 1
    input columns, flattened, times `banded_matrix(kernel, block + kw - 1)`, the
    same matrix for every block. `block=1` is im2col; one block spanning the
    width reads each input row once per kernel row.
    """
    kh, kw, cin, cout = kernel.shape
    pads = _conv_pads(x.shape, kernel.shape, (1, 1), padding)
    x = jnp.pad(_written_gradient(x), ((0, 0), pads[0], pads[1], (0, 0)))
    batch, height, width, _ = x.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    block = block or banded_block_width(out_w, kw)
    blocks = -(-out_w // block)
    span = block + kw - 1
    if blocks * block + kw - 1 > width:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, blocks * block + kw - 1 - width), (0, 0)))
    # Two stacks on new axes (kernel rows, then column blocks): XLA writes each in
    # one fused loop, where concatenating along channels copies piece by piece.
    rows = jnp.stack([x[:, i : i + out_h] for i in range(kh)], axis=2)
    segments = jnp.stack([rows[:, :, :, q * block : q * block + span] for q in range(blocks)], axis=2)
    segments = segments.reshape(batch * out_h * blocks, kh * span * cin)
    y = (segments @ banded_matrix(kernel, span)).reshape(batch, out_h, blocks * block, cout)
    return y[:, :, :out_w]


def im2col_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Any) -> jax.Array:
    """2-D convolution as one matmul over shifted slices (NHWC input, HWIO kernel).

    Equals `lax.conv_general_dilated` (no dilation, one group): patches are laid
    out (kh, kw, c_in) so `kernel.reshape(-1, c_out)` multiplies them directly.
    """
    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (sh, sw), padding)
    else:
        pads = [tuple(p) for p in padding]
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    if kh == kw == 1:
        patches = x[:, : sh * (out_h - 1) + 1 : sh, : sw * (out_w - 1) + 1 : sw, :]
    else:
        patches = jnp.concatenate(
            [
                x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-1,
        )
    return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
    """A drop-in for `nn.Conv` (same `kernel`/`bias` parameters) with a choice of lowering.

    `impl`: `xla` (lax.conv), `im2col` (shifted slices + matmul), `banded`
    (row segments times a banded matrix made from the kernel, `banded_conv`; a
    strided or grouped convolution falls back to im2col or xla), or `auto`: on
    CPU `banded` where `banded_applies` (stride 1, few input channels) and
    `im2col` elsewhere, on accelerators `xla`. Parameters and results are the
    same either way, so the choice is purely about speed.
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
        impl = _resolve_impl(self.impl, x.shape, kernel.shape, strides, self.padding, self.feature_group_count)
        if impl == "banded" and strides == (1, 1) and self.feature_group_count == 1:
            y = banded_conv(x, kernel.astype(x.dtype), self.padding)
        elif impl in ("im2col", "banded") and self.feature_group_count == 1:
            y = im2col_conv(x, kernel.astype(x.dtype), strides, self.padding)
        else:
            y = jax.lax.conv_general_dilated(
                x, kernel.astype(x.dtype), strides, self.padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.feature_group_count,
            )
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(y.dtype)
        return y
