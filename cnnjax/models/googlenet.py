"""GoogLeNet / Inception v1 (Szegedy et al. 2015), in torchvision's layout.

Nine inception modules: parallel 1x1, 1x1->3x3, 1x1->"5x5" and pool->1x1
branches concatenated along channels, with 1x1 reductions in front of the
expensive convolutions. Every conv is conv (no bias) -> BN (eps 1e-3) -> ReLU,
as in torchvision (the 2015 paper predates BN).

The "5x5" branch uses a 3x3 kernel. This reproduces torchvision (whose layout
came from the pretrained weights it ports, which had that kernel size), and it is
what makes the count 6,624,904 for 1000 classes; a true 5x5 there would add
parameters.

Auxiliary classifiers (after inception 4a and 4d) are optional
(`aux_logits=True`). With them, `train=True` returns `(logits, aux1, aux2)` and
`train=False` returns only `logits`; the paper weights each auxiliary loss by
`AUX_LOSS_WEIGHT` (0.3), see `googlenet_loss`. Without them the model returns
`logits` in both modes.
"""

from __future__ import annotations

import functools
from typing import Union

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from cnnjax.models import layers

AUX_LOSS_WEIGHT = 0.3

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj) per module (paper Table 1).
INCEPTION_SPECS: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

GoogLeNetOutput = Union[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]


class ConvBN(nn.Module):
    """conv (no bias) -> BN -> activation."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            (self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
        )(x)
        x = layers.batch_norm(train, epsilon=1e-3)(x)
        return layers.get_activation(self.activation)(x)


class Inception(nn.Module):
    """One inception module; `spec` as in `INCEPTION_SPECS`."""

    spec: tuple[int, int, int, int, int, int]
    conv: functools.partial

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        n1, n3r, n3, n5r, n5, pool_proj = self.spec
        branch1 = self.conv(n1)(x, train=train)
        branch2 = self.conv(n3r)(x, train=train)
        branch2 = self.conv(n3, kernel_size=3)(branch2, train=train)
        branch3 = self.conv(n5r)(x, train=train)
        # torchvision's kernel size, see the module docstring.
        branch3 = self.conv(n5, kernel_size=3)(branch3, train=train)
        branch4 = layers.max_pool_ceil(x, 3, 1, padding=1)
        branch4 = self.conv(pool_proj)(branch4, train=train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class AuxHead(nn.Module):
    """Auxiliary classifier: 4x4 avg pool -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC."""

    num_classes: int
    conv: functools.partial
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        x = layers.adaptive_avg_pool(x, (4, 4))
        x = self.conv(128)(x, train=train)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(1024, kernel_init=kernel_init)(x))
        x = layers.Dropout(0.7, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=kernel_init)(x)


class GoogLeNet(nn.Module):
    """GoogLeNet (22 weight layers deep) with optional auxiliary classifiers."""

    num_classes: int = 1000
    aux_logits: bool = False
    activation: str = "relu"
    dropout_rate: float = 0.2
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> GoogLeNetOutput:
        conv = functools.partial(
            ConvBN,
            activation=self.activation,
            kernel_init=self.kernel_init,
            init_scale=self.init_scale,
        )
        x = conv(64, kernel_size=7, stride=2)(x, train=train)
        x = layers.max_pool_ceil(x, 3, 2)
        x = conv(64)(x, train=train)
        x = conv(192, kernel_size=3)(x, train=train)
        x = layers.max_pool_ceil(x, 3, 2)
        aux = []
        # Build the heads at init even when `train` is false, so the variables exist.
        want_aux = self.aux_logits and (train or self.is_initializing())
        for name, spec in INCEPTION_SPECS.items():
            if name in ("4a", "5a"):
                x = layers.max_pool_ceil(x, 3, 2) if name == "4a" else layers.max_pool_ceil(x, 2, 2)
            x = Inception(spec, conv, name=f"inception{name}")(x, train=train)
            if want_aux and name in ("4a", "4d"):
                head = AuxHead(
                    self.num_classes,
                    conv,
                    kernel_init=self.kernel_init,
                    init_scale=self.init_scale,
                    name=f"aux{len(aux) + 1}",
                )
                aux.append(head(x, train=train))
        x = jnp.mean(x, axis=(1, 2))
        x = layers.Dropout(self.dropout_rate, deterministic=not train)(x)
        logits = nn.Dense(self.num_classes, kernel_init=layers.get_init(self.kernel_init, self.init_scale))(x)
        if self.aux_logits and train:
            return logits, aux[0], aux[1]
        return logits


def googlenet_loss(outputs: GoogLeNetOutput, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy, plus `AUX_LOSS_WEIGHT` times each auxiliary loss.

    Args:
      outputs: what `GoogLeNet` returned: logits, or `(logits, aux1, aux2)`.
      labels: integer class labels, shape `(batch,)`.
    """
    if not isinstance(outputs, tuple):
        outputs = (outputs,)
    losses = [optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean() for logits in outputs]
    return losses[0] + AUX_LOSS_WEIGHT * sum(losses[1:])
