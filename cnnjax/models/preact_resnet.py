"""Pre-activation ResNets for CIFAR (He et al. 2016, "Identity Mappings in Deep
Residual Networks"): ResNet-164 and ResNet-1001.

Depth 9n+2: a 3x3 conv with 16 filters, three stages of n bottleneck units
(BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1) with 64/128/256 output
channels (bottleneck width a quarter of that), a final BN-ReLU, global average
pooling and a dense classifier. The first unit of each stage changes the shape:
its BN-ReLU is shared by the residual branch and a 1x1 projection shortcut, and
it carries the stride on its first 1x1 conv, as in the authors' reference code
(KaimingHe/resnet-1k-layers, which also drops conv biases). Every other unit
has an untouched identity shortcut, the point of the paper.

For 10 classes: ResNet-164 has 1,703,258 parameters and ResNet-1001 10,327,706
(the paper: 1.7M and 10.2M).

The n-1 identical units of each stage run under `nn.scan`, so ResNet-1001
compiles about as fast as ResNet-164.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit; returns `(output, None)` for `nn.scan`."""

    features: int
    stride: int = 1
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
        width = self.features // 4
        strides = (self.stride, self.stride)
        preact = act(layers.batch_norm(self.train)(x))
        projects = self.stride != 1 or x.shape[-1] != self.features
        y = conv(width, (1, 1), strides)(preact)
        y = act(layers.batch_norm(self.train)(y))
        y = conv(width, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = act(layers.batch_norm(self.train)(y))
        y = conv(self.features, (1, 1))(y)
        if projects:
            shortcut = conv(self.features, (1, 1), strides, name="shortcut_conv")(preact)
        else:
            shortcut = x
        return y + shortcut, None


class PreActResNet(nn.Module):
    """Pre-activation bottleneck ResNet-(9n+2) for 32x32 inputs.

    Attributes:
      depth: 9n+2 (164 and 1001 in the paper).
      widths: output channels of the three stages.
      stem_width: filters of the first 3x3 conv.
      scan_blocks: run the repeated units of each stage under `nn.scan`.
    """

    depth: int = 164
    num_classes: int = 10
    widths: tuple[int, ...] = (64, 128, 256)
    stem_width: int = 16
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0
    scan_blocks: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if (self.depth - 2) % 9 or self.depth < 11:
            raise ValueError(f"Pre-act ResNet depth must be 9n+2 with n >= 1, got {self.depth}")
        units = (self.depth - 2) // 9
        block = functools.partial(
            PreActBottleneck,
            train=train,
            activation=self.activation,
            kernel_init=self.kernel_init,
            init_scale=self.init_scale,
        )
        x = nn.Conv(
            self.stem_width,
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            name="stem_conv",
        )(x)
        for stage, features in enumerate(self.widths):
            stride = 1 if stage == 0 else 2
            x, _ = block(features=features, stride=stride, name=f"stage{stage + 1}_block1")(x)
            x = layers.repeat_blocks(
                functools.partial(block, features=features),
                units - 1,
                x,
                name=f"stage{stage + 1}_rest",
                scan=self.scan_blocks,
            )
        x = layers.get_activation(self.activation)(layers.batch_norm(train, name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


VARIANTS: dict[str, functools.partial] = {
    f"preact_resnet{depth}": functools.partial(PreActResNet, depth=depth) for depth in (164, 1001)
}
