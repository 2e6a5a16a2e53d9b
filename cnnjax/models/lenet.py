"""LeNet-5 (LeCun et al. 1998), modern variant.

Modern means: C3 connects to all six S2 maps (the 1998 paper uses a partial
connection table), ReLU instead of scaled tanh, max-pooling instead of trainable
subsampling, and a plain dense 10-way output instead of RBF units. At 32x32x1
input with 10 classes it has 61,706 parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers


class LeNet5(nn.Module):
    """LeNet-5: conv5(6) - pool - conv5(16) - pool - fc120 - fc84 - fc(num_classes).

    Inputs smaller than 32x32 are zero-padded to 32x32 (the paper centred its
    28x28 digits in a 32x32 field), so the parameter count is the same for MNIST.
    """

    num_classes: int = 10
    activation: str = "relu"
    pooling: str = "max"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0
    dropout_rate: float = 0.0
    conv_impl: str = "auto"
    # BatchNorm after every conv and hidden dense layer (before the
    # activation); those layers then drop their bias (BN's shift replaces it).
    batch_norm: bool = False
    # The classifier starts small: LeCun-normal with its std times `head_scale`,
    # so the initial logits are near 0 and the loss near ln(num_classes) whatever
    # the hidden layers' init (He's factor 2 suits layers followed by ReLU, not
    # the logits). None: the head follows kernel_init like the other layers.
    head_scale: float | None = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        height, width = x.shape[-3], x.shape[-2]
        pad_h, pad_w = max(0, 32 - height), max(0, 32 - width)
        if pad_h or pad_w:
            x = jnp.pad(
                x,
                ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
            )
        for features in (6, 16):
            x = layers.Conv(features, (5, 5), padding="VALID", kernel_init=kernel_init, impl=self.conv_impl,
                            use_bias=not self.batch_norm)(x)
            if self.batch_norm:
                x = layers.batch_norm(train)(x)
            x = layers.pool(act(x), self.pooling, 2, train=train)
        x = x.reshape((x.shape[0], -1))
        for features in (120, 84):
            x = nn.Dense(features, kernel_init=kernel_init, use_bias=not self.batch_norm)(x)
            if self.batch_norm:
                x = layers.batch_norm(train)(x)
            x = act(x)
            x = layers.Dropout(self.dropout_rate, deterministic=not train)(x)
        head_init = (
            kernel_init
            if self.head_scale is None
            else layers.variance_scaling(self.head_scale**2, "fan_in", "truncated_normal")
        )
        return nn.Dense(self.num_classes, kernel_init=head_init)(x)
