"""ResNet 18/34/50/101/152 for ImageNet (He et al. 2016), in torchvision's layout.

7x7/2 conv stem (64 filters) and 3x3/2 max pool, four stages with 64/128/256/512
base widths, global average pooling and a dense classifier. ResNet-18/34 use
basic blocks (two 3x3 convs); ResNet-50/101/152 use bottleneck blocks
(1x1 -> 3x3 -> 1x1 with 4x expansion) with the stride on the 3x3 conv
(torchvision's "v1.5"). A shortcut is a 1x1 conv + BN projection where the shape
changes and the identity otherwise. `resnet50` has 25,557,032 parameters.

Blocks after the first of each stage are identical and run under `nn.scan`
(`scan_blocks`), so compile time does not grow with depth.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers

STAGE_SIZES: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class ResidualBlock(nn.Module):
    """Basic (`bottleneck=False`) or bottleneck residual block, post-activation.

    Returns `(output, None)` so it can be the body of `nn.scan`.
    """

    features: int
    stride: int = 1
    bottleneck: bool = False
    train: bool = False
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, _=None) -> tuple[jax.Array, None]:
        act = layers.get_activation(self.activation)
        conv = functools.partial(
            nn.Conv, use_bias=False, kernel_init=layers.get_init(self.kernel_init, self.init_scale)
        )
        norm = functools.partial(layers.batch_norm, self.train)
        strides = (self.stride, self.stride)
        same3 = ((1, 1), (1, 1))
        if self.bottleneck:
            out_features = 4 * self.features
            y = act(norm()(conv(self.features, (1, 1))(x)))
            y = act(norm()(conv(self.features, (3, 3), strides, same3)(y)))
            y = norm()(conv(out_features, (1, 1))(y))
        else:
            out_features = self.features
            y = act(norm()(conv(self.features, (3, 3), strides, same3)(x)))
            y = norm()(conv(self.features, (3, 3), padding=same3)(y))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != out_features:
            shortcut = conv(out_features, (1, 1), strides, name="shortcut_conv")(x)
            shortcut = norm(name="shortcut_bn")(shortcut)
        return act(y + shortcut), None


class ResNet(nn.Module):
    """ImageNet ResNet; `depth` picks the stage sizes and block type.

    Attributes:
      depth: 18, 34, 50, 101 or 152.
      widths: base widths of the four stages (bottleneck outputs are 4x these).
      stem_width: filters of the 7x7 stem conv.
      stage_sizes: blocks per stage, overriding the ones `depth` implies
        (`depth` still picks the block type: bottleneck from 50 on).
      scan_blocks: run the repeated blocks of each stage under `nn.scan`.
    """

    depth: int = 50
    num_classes: int = 1000
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0
    stage_sizes: tuple[int, ...] | None = None
    scan_blocks: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.stage_sizes is None and self.depth not in STAGE_SIZES:
            raise ValueError(f"ResNet depth must be one of {sorted(STAGE_SIZES)}, got {self.depth}")
        block = functools.partial(
            ResidualBlock,
            bottleneck=self.depth >= 50,
            train=train,
            activation=self.activation,
            kernel_init=self.kernel_init,
            init_scale=self.init_scale,
        )
        x = nn.Conv(
            self.stem_width,
            (7, 7),
            (2, 2),
            padding=((3, 3), (3, 3)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            name="stem_conv",
        )(x)
        x = layers.get_activation(self.activation)(layers.batch_norm(train, name="stem_bn")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        stage_sizes = self.stage_sizes or STAGE_SIZES[self.depth]
        for stage, (blocks, features) in enumerate(zip(stage_sizes, self.widths)):
            stride = 1 if stage == 0 else 2
            x, _ = block(features=features, stride=stride, name=f"stage{stage + 1}_block1")(x)
            x = layers.repeat_blocks(
                functools.partial(block, features=features),
                blocks - 1,
                x,
                name=f"stage{stage + 1}_rest",
                scan=self.scan_blocks,
            )
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


VARIANTS: dict[str, functools.partial] = {
    f"resnet{depth}": functools.partial(ResNet, depth=depth) for depth in STAGE_SIZES
}
