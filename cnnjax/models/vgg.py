"""VGG 11/13/16/19 (Simonyan & Zisserman 2015, configurations A, B, D, E).

Stacks of 3x3 convolutions (stride 1, padding 1) separated by 2x2/2 pooling,
then an adaptive average pool to 7x7 and three FC layers with dropout, laid out
as torchvision's `vgg*` and `vgg*_bn` (the BN variants keep the conv bias, as
torchvision does). `vgg16` has 138,357,544 parameters for 1000 classes.
"""

from __future__ import annotations

import functools

import jax
from flax import linen as nn

from cnnjax.models import layers

# Convolutions per stage for each depth; stage widths are `widths`.
STAGE_DEPTHS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


class VGG(nn.Module):
    """VGG network.

    Attributes:
      depth: 11, 13, 16 or 19 weight layers.
      batch_norm: BN after every conv (the `_bn` variants).
      widths: filters of the five stages.
      fc_features: width of the two hidden FC layers.
      pool_output: spatial size of the adaptive pool before the classifier.
    """

    depth: int = 16
    num_classes: int = 1000
    batch_norm: bool = False
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    fc_features: int = 4096
    pool_output: int = 7
    pooling: str = "max"
    activation: str = "relu"
    dropout_rate: float = 0.5
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.depth not in STAGE_DEPTHS:
            raise ValueError(f"VGG depth must be one of {sorted(STAGE_DEPTHS)}, got {self.depth}")
        act = layers.get_activation(self.activation)
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        for convs, features in zip(STAGE_DEPTHS[self.depth], self.widths):
            for _ in range(convs):
                x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=kernel_init)(x)
                if self.batch_norm:
                    x = layers.batch_norm(train)(x)
                x = act(x)
            x = layers.pool(x, self.pooling, 2, train=train)
        x = layers.adaptive_avg_pool(x, (self.pool_output, self.pool_output))
        x = x.reshape((x.shape[0], -1))
        for _ in range(2):
            x = act(nn.Dense(self.fc_features, kernel_init=kernel_init)(x))
            x = layers.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=kernel_init)(x)


VARIANTS: dict[str, functools.partial] = {}
for _depth in STAGE_DEPTHS:
    VARIANTS[f"vgg{_depth}"] = functools.partial(VGG, depth=_depth)
    VARIANTS[f"vgg{_depth}_bn"] = functools.partial(VGG, depth=_depth, batch_norm=True)
