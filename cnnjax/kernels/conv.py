"""CPU lowerings of 2-D convolution: oneDNN custom calls, im2col and banded matmuls.

On CPU `auto` takes oneDNN's direct convolutions (`cnnjax.kernels.onednn`,
XLA custom calls, the kernels PyTorch uses) for every float32 ungrouped layer
that is not banded, in and out of loops and under vmap, wherever the oneDNN
kernels are built (Linux x86-64 with oneDNN from pip and a C++ compiler): the
ResNet-20 train step at batch 128 went from 0.42x PyTorch eager (XLA's
convolution) to 1.10x. Layers with few input channels (LeNet's 5x5 layers,
an RGB stem) keep `banded_conv`, faster there.

Without oneDNN (or under `xla_only`): XLA's own CPU convolution is fast for a
3x3 layer compiled outside any loop (forward, input gradient and weight
gradient reach library kernels), but inside a `while` loop its CPU backend
compiles them otherwise (the optimised HLO marks each for partitioned code
generation) and they run far slower: ResNet-20 at batch 128 takes 15 s per
step with its blocks under `nn.scan` and 1 s unrolled, and a scanned pair of
3x3 convolutions' gradients is 10-20x slower than unrolled. So `auto` then
lowers to matmuls where a gradient is taken (`im2col_conv`, or `banded_conv`),
which are fast in and out of loops, and models that scan blocks unroll them
on CPU (`unroll_blocks`). Where no gradient is taken (evaluation, prediction,
export) XLA's forward convolution is the faster one, in loops and under vmap
too, so `auto` uses it there (`mixed_conv`). A single run's step, which its
caller knows is compiled outside any loop (`outside_loops`), takes XLA's
convolution throughout.

On accelerators `auto` is XLA's convolution, except on a GPU where each
population member has its own kernel under `vmap` (`members_batched`): vmap
turns such a layer into one grouped convolution (`feature_group_count` = P),
slow in cuDNN, so there `auto` lowers to the same matmuls as on CPU, which
vmap batches (LeNet-5, P=32 on one H200: 4.4-5.2x the member-steps/s of the
grouped convolution). TPUs keep XLA's convolutions (not measured there).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any

import jax
import jax.numpy as jnp

from cnnjax.kernels import onednn

CONV_IMPL_CHOICES = ("auto", "xla", "im2col", "banded", "onednn")

# `banded` (see `banded_conv`) trades arithmetic for memory traffic: it multiplies
# wide row segments by a banded matrix, doing (block + kw - 1) / kw times
# im2col's multiply-adds while reading each input element about kh times instead
# of kh * kw. That pays on CPU for convolutions with few input channels (LeNet's
# 5x5 convolutions, an RGB stem), where im2col's patch matrix, not the
# arithmetic, is the cost; the limits below keep it to such layers.
BANDED_MAX_ROW_FEATURES = 32  # kernel width * input channels
BANDED_MAX_MATRIX_SIZE = 1 << 16  # elements of the banded matrix


def conv_pads(x_shape, kernel_shape, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return [tuple(p) for p in jax.lax.padtype_to_pads(x_shape[1:3], kernel_shape[:2], strides, padding)]
    return [tuple(p) for p in padding]


def banded_applies(x_shape, kernel_shape, strides, padding, feature_group_count: int = 1) -> bool:
    """Whether `auto` lowers this convolution to `banded_conv` on CPU (see `BANDED_*`)."""
    kh, kw, cin, cout = kernel_shape
    if tuple(strides) != (1, 1) or feature_group_count != 1 or kw == 1:
        return False
    pads = conv_pads(x_shape, kernel_shape, (1, 1), padding)
    out_w = x_shape[2] + sum(pads[1]) - kw + 1
    if out_w <= 0:
        return False
    block = banded_block_width(out_w, kw)
    span = block + kw - 1
    # A block of one column is im2col with another patch layout: leave that to im2col.
    return (block > 1 and kw * cin <= BANDED_MAX_ROW_FEATURES
            and kh * span * cin * block * cout <= BANDED_MAX_MATRIX_SIZE)


_TRACING = threading.local()


@contextlib.contextmanager
def _tracing_flag(name: str):
    previous = getattr(_TRACING, name, False)
    setattr(_TRACING, name, True)
    try:
        yield
    finally:
        setattr(_TRACING, name, previous)


def outside_loops(fn):
    """`fn`, whose convolutions, when traced, are known to compile outside any loop.

    A layer cannot see whether it is traced inside a `lax.scan`/`lax.map`; the
    caller that jits a single run's step can, and wraps it with this. Where
    oneDNN is unavailable, `auto` there takes XLA's own CPU convolution for
    non-banded layers, gradients included: outside loops it is the faster one
    (ResNet-20's train step, batch 128: about 0.73x the time of im2col's),
    while populations and scanned epochs keep `mixed_conv`.
    """

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with _tracing_flag("outside_loops"):
            return fn(*args, **kwargs)

    return traced


def xla_only(fn):
    """`fn`, whose convolutions, when traced, stay XLA operations (no oneDNN custom calls).

    For programs that leave this process (`jax.export` artifacts, which only
    carry XLA's own operations) and programs XLA partitions over several devices
    (a data-parallel step: the partitioner would gather a custom call's operands
    onto every device). `auto` then resolves as it would without oneDNN, and an
    explicit `onednn` becomes `xla`.
    """

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with _tracing_flag("xla_only"):
            return fn(*args, **kwargs)

    return traced


def members_batched(fn):
    """`fn`, traced under `vmap` over population members, each with its own kernels.

    The population code wraps the function it vmaps with this. On a GPU
    `auto` then lowers each layer to `banded_conv` where
    `banded_applies`, else to `im2col_conv`: vmap batches their matmuls, where
    it would turn XLA's convolution into one grouped convolution over all
    members. On CPU and TPU it changes nothing.
    """

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with _tracing_flag("members_batched"):
            return fn(*args, **kwargs)

    return traced


def resolve_conv_impl(impl: str, x_shape=None, kernel_shape=None, strides=(1, 1), padding="VALID",
                      feature_group_count: int = 1, dtype=jnp.float32) -> str:
    """The lowering `Conv(impl=...)` uses for this layer: `auto` becomes `banded`, `banded_mixed`, `onednn`, `mixed` or `xla`.

    On CPU `auto` is `banded` where `banded_applies` (`banded_mixed` where
    oneDNN can run it too: `mixed_conv` with oneDNN where no gradient is taken
    and banded where one is), else `onednn` where
    `cnnjax.kernels.onednn.applies` and the kernels are available (not under
    `xla_only`); otherwise `xla` in code traced under `outside_loops` and
    `mixed` elsewhere (`mixed_conv`: im2col where a gradient is taken, XLA's
    convolution where none is; XLA's CPU convolution gradients run 10-100x
    slower inside a `while` loop, and a layer cannot tell where it will be
    compiled). Accelerators keep XLA's convolutions, except a GPU under
    `members_batched`, where an ungrouped layer takes `banded` or `im2col` (a
    grouped one stays `xla`). An explicit `onednn` is `xla` under `xla_only`
    and on accelerators, and a ValueError saying why where the kernels are
    unavailable on CPU (`onednn_problem` checks that before any compile).
    """
    if impl not in CONV_IMPL_CHOICES:
        raise ValueError(f"Unknown conv_impl {impl!r}; valid choices: {', '.join(CONV_IMPL_CHOICES)}")
    if impl == "auto":
        backend = jax.default_backend()
        if backend != "cpu":
            # Measured on GPUs only; a TPU keeps XLA's convolutions until measured there.
            if backend != "gpu" or not getattr(_TRACING, "members_batched", False) or feature_group_count != 1:
                return "xla"
            if x_shape is not None and banded_applies(x_shape, kernel_shape, strides, padding):
                return "banded"
            return "im2col"
        use_onednn = (not getattr(_TRACING, "xla_only", False) and x_shape is not None
                      and onednn.applies(x_shape, kernel_shape, strides,
                                         conv_pads(x_shape, kernel_shape, strides, padding), dtype,
                                         feature_group_count))
        if x_shape is not None and banded_applies(x_shape, kernel_shape, strides, padding, feature_group_count):
            return "banded_mixed" if use_onednn and onednn.available() else "banded"
        if use_onednn and onednn.available():
            return "onednn"
        return "xla" if getattr(_TRACING, "outside_loops", False) else "mixed"
    if impl == "onednn":
        if getattr(_TRACING, "xla_only", False) or jax.default_backend() != "cpu":
            return "xla"  # the custom calls exist on CPU only
        if (problem := onednn_problem(impl)) is not None:
            raise ValueError(problem)
        if x_shape is not None and not onednn.applies(x_shape, kernel_shape, strides,
                                                      conv_pads(x_shape, kernel_shape, strides, padding), dtype,
                                                      feature_group_count):
            return "xla"  # bfloat16, grouped, or padding past the kernel
    return impl


def onednn_problem(impl: str) -> str | None:
    """Why `conv_impl=impl` cannot run on this CPU (an explicit `onednn` without the kernels), or None."""
    if impl != "onednn" or jax.default_backend() != "cpu":
        return None
    reason = onednn.unavailable_reason()
    return None if reason is None else f"conv_impl='onednn' is unavailable here: {reason}"


def unroll_blocks(repeats: int) -> int:
    """The `unroll` for a scan over `repeats` blocks of convolutions: all of them on CPU, else 1.

    Unrolled, the parameters keep their stacked layout (same model, same
    checkpoints) while XLA's CPU backend compiles each convolution outside a
    loop, where it reaches its fast kernels; accelerators keep the loop (and its
    flat compile time).
    """
    return max(1, repeats) if jax.default_backend() == "cpu" else 1


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
    """Identity written out in both passes: behind an optimisation barrier forward, through a matmul backward.

    Forward, the barrier makes XLA write the input once before the segments
    are gathered from it; otherwise XLA fuses the input's producer (a batch's
    crop, flip and normalisation, a previous layer's pool) into the segment copy
    and recomputes it for every piece it copies (LeNet-5's first layer in the
    CIFAR-folder job: the copy took 3.7 of 13.2 profiled ms a step, 1.2 of 8.2
    with the barrier). Backward, multiplying by the (channels x channels)
    identity matrix is exact for finite values; the matmul only stops XLA from
    fusing the computation of the cotangent (for a convolution's input: a sum
    of shifted slices) into its consumer. Without it the gradient of a
    preceding max pool, which reads each cotangent element once per window
    position, recomputes that sum 4 times.
    """
    return jax.lax.optimization_barrier(x)


def _written_gradient_fwd(x):
    return jax.lax.optimization_barrier(x), None


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

    The segments are gathered in whole chunks of `block` columns: the row is
    viewed as chunks of block * c_in values, and a segment is `links` consecutive
    chunks (its span rounded up to whole chunks; the matrix gets zero rows for
    the columns past the span). So the copy that writes the segments takes
    kh * links contiguous pieces per segment, not kh * span single columns:
    LeNet-5's first layer (block 4, span 8, 2 chunks) with its ReLU and pool
    ran forward in 0.76x the time of the column-wise copy (40 batches of 128).
    """
    kh, kw, cin, cout = kernel.shape
    pads = conv_pads(x.shape, kernel.shape, (1, 1), padding)
    x = jnp.pad(_written_gradient(x), ((0, 0), pads[0], pads[1], (0, 0)))
    batch, height, width, _ = x.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    block = block or banded_block_width(out_w, kw)
    blocks = -(-out_w // block)
    span = block + kw - 1
    links = -(-span // block)
    chunks = blocks + links - 1
    # chunks * block >= width: the last segment ends at least kw - 1 columns past the last block's start.
    x = jnp.pad(x, ((0, 0), (0, 0), (0, chunks * block - width), (0, 0)))
    x = x.reshape(batch, height, chunks, block * cin)
    # One stack over (kernel row, chunk) pairs on new axes: XLA writes it in one
    # fused loop, each piece a contiguous run of block * c_in values.
    segments = jnp.stack([jnp.stack([x[:, i : i + out_h, j : j + blocks] for j in range(links)], axis=3)
                          for i in range(kh)], axis=3)
    segments = segments.reshape(batch * out_h * blocks, kh * links * block * cin)
    matrix = banded_matrix(kernel, span).reshape(kh, span, cin, block * cout)
    matrix = jnp.pad(matrix, ((0, 0), (0, links * block - span), (0, 0), (0, 0)))
    y = (segments @ matrix.reshape(kh * links * block * cin, block * cout)).reshape(batch, out_h, blocks * block, cout)
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


def xla_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Any,
             feature_group_count: int = 1) -> jax.Array:
    """XLA's own convolution, NHWC input and HWIO kernel."""
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=feature_group_count)


def holds_xla_conv(jaxpr) -> bool:
    """Whether a traced program (a `ClosedJaxpr` or `Jaxpr`) holds XLA's own convolution, in any sub-program.

    Such a program must not be put inside a loop on CPU: XLA's CPU convolution
    gradients run 10-100x slower inside a `while` loop (see `resolve_conv_impl`).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    if holds_xla_conv(sub):
                        return True
    return False


def onednn_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Any) -> jax.Array:
    """`cnnjax.kernels.onednn.onednn_conv` with `padding` as `lax.conv` takes it (a string or pairs)."""
    return onednn.onednn_conv(x, kernel, strides, conv_pads(x.shape, kernel.shape, strides, padding))


def mixed_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Any,
               plain: str = "xla", differentiated: str = "im2col") -> jax.Array:
    """One lowering where no gradient is taken (`plain`), another where one is (`differentiated`).

    `xla`/`im2col` (the default): forward only (evaluation, prediction), XLA's
    CPU convolution is several times faster than im2col's patch matrix, in or
    out of loops and under vmap; its gradients are what is slow inside loops
    (see the module docstring). `onednn`/`banded`: for layers with few input
    channels the banded matmuls train fastest, while oneDNN's forward
    convolution evaluates faster (LeNet-5, 5,000 images: 0.102 s against
    0.134 s). A `custom_vjp` gives both: its plain call is `plain`'s, and when
    differentiated its forward and backward are `differentiated`'s, so a
    training step is unchanged.
    """
    padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
    return _mixed_conv(x, kernel, tuple(strides), padding, plain, differentiated)


def _lowering(name: str, strides, padding):
    if name == "xla":
        return lambda x, k: xla_conv(x, k, strides, padding)
    if name == "onednn":
        return lambda x, k: onednn_conv(x, k, strides, padding)
    if name == "banded":
        return lambda x, k: banded_conv(x, k, padding)
    return lambda x, k: im2col_conv(x, k, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _mixed_conv(x, kernel, strides, padding, plain, differentiated):
    return _lowering(plain, strides, padding)(x, kernel)


def _mixed_conv_fwd(x, kernel, strides, padding, plain, differentiated):
    return jax.vjp(_lowering(differentiated, strides, padding), x, kernel)


def _mixed_conv_bwd(strides, padding, plain, differentiated, pullback, cotangent):
    return pullback(cotangent)


_mixed_conv.defvjp(_mixed_conv_fwd, _mixed_conv_bwd)
