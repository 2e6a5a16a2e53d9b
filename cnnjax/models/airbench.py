"""The airbench94 network for fast CIFAR-10 training (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds").

Layout (32x32x3 input, widths 64/256/256):

    whiten: 2x2 conv, 3 -> 24 channels, VALID, bias  (31x31; kernel fitted to the data, frozen)
    GELU
    3 x ConvGroup: 3x3 conv (no bias) -> 2x2 max pool -> BN -> GELU -> 3x3 conv -> BN -> GELU
                   (31 -> 15 -> 7 -> 3)
    global max pool (the reference's 3x3 max pool on the 3x3 map)
    dense, no bias -> x logit_scale (1/9)

The whitening kernel holds the eigenvectors of the covariance of 2x2 input
patches, scaled by 1/sqrt(eigenvalue + eps), and their negatives (so GELU
keeps both signs of every whitened component): `whitening_kernel` computes it
from training images and `set_whitening` puts it into the parameters. That
kernel and every BatchNorm scale (fixed at 1, as the reference freezes them)
stay in `params`, so the count matches the reference's
`sum(p.numel() for p in net.parameters())`, 1,972,792 at 10 classes, but are
not meant to be trained: `param_labels` names them `frozen` for an
`optax.multi_transform`.

BatchNorm: momentum 0.6 (`r <- 0.6 r + 0.4 batch`), epsilon 1e-12, as in the
reference. The 3x3 convs start as PyTorch's default uniform init with a Dirac
(identity) kernel in the first `c_in` output channels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers

# Labels of `param_labels`.
FROZEN = "frozen"
NORM_BIAS = "norm_bias"
WHITEN_BIAS = "whiten_bias"
DEFAULT = "default"

ACTIVATIONS = ("gelu_exact", *layers.ACTIVATION_CHOICES)


def torch_uniform(scale: float = 1.0) -> layers.Initializer:
    """PyTorch's default conv/linear init, U(-b, b) with b = sqrt(scale / fan_in)."""
    return layers.variance_scaling(scale / 3.0, "fan_in", "uniform")


def dirac_uniform(scale: float = 1.0) -> layers.Initializer:
    """`torch_uniform`, then output channel i < min(c_in, c_out) becomes the identity on input i.

    The identity sits at the kernel's centre tap, so with SAME padding those
    channels start by passing their input through unchanged.
    """
    base = torch_uniform(scale)

    def init(key, shape, dtype=jnp.float32):
        kernel = base(key, shape, dtype)
        kh, kw, cin, cout = shape
        n = min(cin, cout)
        identity = jnp.zeros((kh, kw, cin, n), dtype).at[kh // 2, kw // 2, jnp.arange(n), jnp.arange(n)].set(1)
        return kernel.at[..., :n].set(identity)

    return init


def _kernel_init(name: str, scale: float, *, dirac: bool) -> layers.Initializer:
    if name == "dirac_uniform":
        return dirac_uniform(scale) if dirac else torch_uniform(scale)
    return layers.get_init(name, scale)


def _activation(name: str):
    if name == "gelu_exact":
        # PyTorch's nn.GELU (the reference) is the erf form; Linen's default is the tanh approximation.
        return functools.partial(nn.gelu, approximate=False)
    return layers.get_activation(name)


class ConvGroup(nn.Module):
    """conv3 -> max pool 2 -> BN -> act -> conv3 -> BN -> act."""

    features: int
    train: bool
    activation: str = "gelu_exact"
    kernel_init: str = "dirac_uniform"
    init_scale: float = 1.0
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-12
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        conv = functools.partial(
            layers.Conv,
            self.features,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=_kernel_init(self.kernel_init, self.init_scale, dirac=True),
            impl=self.conv_impl,
        )
        norm = functools.partial(layers.batch_norm, self.train, momentum=self.bn_momentum, epsilon=self.bn_epsilon)
        x = conv(name="conv1")(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = act(norm(name="norm1")(x))
        x = conv(name="conv2")(x)
        return act(norm(name="norm2")(x))


class Airbench94(nn.Module):
    """airbench94: frozen 2x2 whitening conv, three conv groups, max pool, scaled linear head.

    Attributes:
      num_classes: outputs of the head.
      widths: channels of the three conv groups.
      whiten_kernel_size: side of the whitening patches (2: 2 * 3 * 4 = 24 channels).
      activation: `gelu_exact` (the reference) or one of `layers.ACTIVATION_CHOICES`.
      kernel_init: `dirac_uniform` (the reference: PyTorch's uniform init, Dirac
        identity on the first c_in filters of every 3x3 conv) or one of
        `layers.INIT_CHOICES`.
      init_scale: variance multiplier of the random part of the init.
      bn_momentum, bn_epsilon: BatchNorm running-average momentum and epsilon.
      logit_scale: the logits are multiplied by it.
      conv_impl: `auto`, `xla` or `im2col` (see `layers.Conv`).
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (64, 256, 256)
    whiten_kernel_size: int = 2
    activation: str = "gelu_exact"
    kernel_init: str = "dirac_uniform"
    init_scale: float = 1.0
    bn_momentum: float = 0.6
    bn_epsilon: float = 1e-12
    logit_scale: float = 1.0 / 9.0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
        k = self.whiten_kernel_size
        x = layers.Conv(
            whiten_width(x.shape[-1], k),
            (k, k),
            padding="VALID",
            use_bias=True,
            kernel_init=torch_uniform(),  # replaced by `set_whitening` before training
            impl=self.conv_impl,
            name="whiten",
        )(x)
        x = _activation(self.activation)(x)
        for index, features in enumerate(self.widths):
            x = ConvGroup(
                features,
                train,
                activation=self.activation,
                kernel_init=self.kernel_init,
                init_scale=self.init_scale,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                conv_impl=self.conv_impl,
                name=f"group{index + 1}",
            )(x)
        x = jnp.max(x, axis=(1, 2))
        head_init = _kernel_init(self.kernel_init, self.init_scale, dirac=False)
        x = nn.Dense(self.num_classes, use_bias=False, kernel_init=head_init, name="head")(x)
        return x * jnp.asarray(self.logit_scale, x.dtype)


def whiten_width(channels: int, kernel_size: int) -> int:
    """Output channels of the whitening conv: every patch component and its negative."""
    return 2 * channels * kernel_size**2


def patch_covariance(images: jax.Array, kernel_size: int) -> jax.Array:
    """Uncentred covariance E[p p^T] of every `kernel_size`^2 patch (stride 1, VALID) of NHWC `images`.

    Patches are flattened in (row, column, channel) order, the order of an
    HWIO kernel's first three axes.
    """
    k = kernel_size
    height, width = images.shape[1] - k + 1, images.shape[2] - k + 1
    patches = jnp.concatenate(
        [images[:, i : i + height, j : j + width, :] for i in range(k) for j in range(k)], axis=-1
    ).reshape(-1, k * k * images.shape[-1]).astype(jnp.float32)
    # Full float32 matmul: accelerators would otherwise use TF32/bf16 passes.
    return jnp.matmul(patches.T, patches, precision=jax.lax.Precision.HIGHEST) / patches.shape[0]


def whitening_kernel(images: jax.Array, kernel_size: int = 2, eps: float = 5e-4) -> jax.Array:
    """The whitening conv's HWIO kernel fitted to NHWC `images` (normalised as the net sees them).

    Output channel i < d (d = k*k*c) is the i-th eigenvector of the patch
    covariance (largest eigenvalue first) divided by sqrt(eigenvalue + eps);
    channel d + i is its negative. On the fitted images the first d outputs
    have covariance diag(lambda / (lambda + eps)), close to the identity.
    """
    channels = images.shape[-1]
    k = kernel_size
    eigenvalues, eigenvectors = jnp.linalg.eigh(patch_covariance(images, k))
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    scaled = eigenvectors / jnp.sqrt(eigenvalues + eps)  # columns: one filter each
    kernel = scaled.reshape(k, k, channels, k * k * channels)
    return jnp.concatenate([kernel, -kernel], axis=-1)


def set_whitening(params: dict, kernel: jax.Array) -> dict:
    """`params` with the whitening conv's kernel replaced by `kernel` (a new dict; the input is untouched)."""
    expected = params["whiten"]["kernel"].shape
    if kernel.shape != expected:
        raise ValueError(f"whitening kernel has shape {kernel.shape}, the model expects {expected}")
    return {**params, "whiten": {**params["whiten"], "kernel": kernel.astype(params["whiten"]["kernel"].dtype)}}


def param_labels(params: dict) -> dict:
    """One label per parameter for `optax.multi_transform`.

    `frozen`: the whitening kernel and the BatchNorm scales (never updated);
    `whiten_bias`: the whitening bias (the reference trains it for the first
    epochs only); `norm_bias`: BatchNorm biases (a larger learning rate);
    `default`: conv and head kernels.
    """

    def label(path, _):
        names = [getattr(p, "key", str(p)) for p in path]
        if names[0] == "whiten":
            return FROZEN if names[-1] == "kernel" else WHITEN_BIAS
        if any(n.startswith("norm") for n in names):
            return FROZEN if names[-1] == "scale" else NORM_BIAS
        return DEFAULT

    return jax.tree_util.tree_map_with_path(label, params)


def reference_param_count(num_classes: int = 10, widths=(64, 256, 256), channels: int = 3, kernel_size: int = 2) -> int:
    """The count of the reference PyTorch net (`make_net94`), layer by layer, frozen tensors included."""
    whiten = whiten_width(channels, kernel_size)
    count = whiten * channels * kernel_size**2 + whiten  # whitening weight + bias
    previous = whiten
    for width in widths:
        count += 9 * previous * width + 2 * width  # conv1 + BN weight, bias
        count += 9 * width * width + 2 * width  # conv2 + BN weight, bias
        previous = width
    return count + previous * num_classes  # linear head, no bias

