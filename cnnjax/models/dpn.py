"""Dual Path Networks (Chen et al. 2017): DPN-68/92/98/131.

Each block runs a ResNeXt-style bottleneck (BN-ReLU-conv1x1, BN-ReLU grouped
conv3x3, BN-ReLU-conv1x1) on the concatenation of two paths and splits its
output: the first `bw` channels are added to the residual path, the remaining
`inc` are appended to the densely connected path. The first block of each
stage projects its input (BN-ReLU-conv1x1, strided from stage 2 on) to start a
new residual path and a dense path of 2*inc channels. A final BN-ReLU, global
average pooling and a 1x1 classifier (a dense layer with bias) close the
network. Layout and widths follow the authors' MXNet code (cypw/DPNs) as also
ported to PyTorch (pretrainedmodels, timm); BN epsilon is 1e-3 as there.

Parameters for 1000 classes: dpn68 12,611,602; dpn92 37,668,392;
dpn98 61,570,728; dpn131 79,254,504.

Blocks change width as the dense path grows, so they are unrolled.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers


class BnActConv(nn.Module):
    """BN -> activation -> conv (no bias)."""

    features: int
    kernel_size: int = 1
    stride: int = 1
    groups: int = 1
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = layers.get_activation(self.activation)(layers.batch_norm(train, epsilon=1e-3)(x))
        pad = self.kernel_size // 2
        return nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            (self.stride, self.stride),
            padding=((pad, pad), (pad, pad)),
            feature_group_count=self.groups,
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
        )(x)


class DualPathBlock(nn.Module):
    """One dual path block on `(residual, dense)`; returns the new pair.

    Attributes:
      bottleneck: width of the 1x1 and grouped 3x3 convs.
      residual: channels of the residual path (`bw`).
      increment: channels this block appends to the dense path (`inc`).
      groups: groups of the 3x3 conv.
      stride: stride of the projecting first block of a stage.
      project: the first block of a stage (starts new paths from its input).
    """

    bottleneck: int
    residual: int
    increment: int
    groups: int
    stride: int = 1
    project: bool = False
    conv: functools.partial = BnActConv

    @nn.compact
    def __call__(self, paths: tuple[jax.Array, jax.Array], *, train: bool) -> tuple[jax.Array, jax.Array]:
        x = jnp.concatenate(paths, axis=-1)
        if self.project:
            shortcut = self.conv(self.residual + 2 * self.increment, stride=self.stride,
                                 name="projection")(x, train=train)  # fmt: skip
            residual, dense = shortcut[..., : self.residual], shortcut[..., self.residual :]
        else:
            residual, dense = paths
        y = self.conv(self.bottleneck)(x, train=train)
        y = self.conv(self.bottleneck, kernel_size=3, stride=self.stride, groups=self.groups)(y, train=train)
        y = self.conv(self.residual + self.increment)(y, train=train)
        return residual + y[..., : self.residual], jnp.concatenate([dense, y[..., self.residual :]], axis=-1)


class DPN(nn.Module):
    """Dual Path Network.

    Attributes:
      block_sizes: blocks per stage (k_sec).
      increments: dense-path growth per block in each stage (inc_sec).
      bottleneck_factor: k_R, the width of the 1x1/3x3 bottleneck convs in
        stage 1; it doubles with each stage.
      groups: groups of every 3x3 conv (G).
      stem_features: filters of the stem conv.
      small: DPN-68 style: 3x3 stem conv and residual widths 64..512 instead of
        the 7x7 stem and widths 256..2048.
      base_width: 64 in every published model; a smaller value shrinks all
        residual and bottleneck widths proportionally (tiny test variants).
    """

    num_classes: int = 1000
    block_sizes: tuple[int, ...] = (3, 4, 20, 3)
    increments: tuple[int, ...] = (16, 32, 24, 128)
    bottleneck_factor: int = 96
    groups: int = 32
    stem_features: int = 64
    small: bool = False
    base_width: int = 64
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        conv = functools.partial(
            BnActConv,
            activation=self.activation,
            kernel_init=self.kernel_init,
            init_scale=self.init_scale,
        )
        stem_kernel = 3 if self.small else 7
        pad = stem_kernel // 2
        x = nn.Conv(
            self.stem_features,
            (stem_kernel, stem_kernel),
            (2, 2),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            name="stem_conv",
        )(x)
        x = act(layers.batch_norm(train, epsilon=1e-3, name="stem_bn")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        paths = (x, x[..., :0])
        expansion = 1 if self.small else 4
        for stage, (blocks, increment) in enumerate(zip(self.block_sizes, self.increments)):
            residual = self.base_width * expansion * 2**stage
            # k_R scales with the stage: 3x3 width = k_R * (base width of the stage) / 64.
            bottleneck = self.bottleneck_factor * 2**stage * self.base_width // 64
            for index in range(blocks):
                paths = DualPathBlock(
                    bottleneck,
                    residual,
                    increment,
                    self.groups,
                    stride=1 if stage == 0 or index > 0 else 2,
                    project=index == 0,
                    conv=conv,
                    name=f"stage{stage + 1}_block{index + 1}",
                )(paths, train=train)
        x = jnp.concatenate(paths, axis=-1)
        x = act(layers.batch_norm(train, epsilon=1e-3, name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


VARIANTS: dict[str, functools.partial] = {
    "dpn68": functools.partial(
        DPN,
        small=True,
        stem_features=10,
        bottleneck_factor=128,
        groups=32,
        block_sizes=(3, 4, 12, 3),
        increments=(16, 32, 32, 64),
    ),
    "dpn92": functools.partial(
        DPN,
        stem_features=64,
        bottleneck_factor=96,
        groups=32,
        block_sizes=(3, 4, 20, 3),
        increments=(16, 32, 24, 128),
    ),
    "dpn98": functools.partial(
        DPN,
        stem_features=96,
        bottleneck_factor=160,
        groups=40,
        block_sizes=(3, 6, 20, 3),
        increments=(16, 32, 32, 128),
    ),
    "dpn131": functools.partial(
        DPN,
        stem_features=128,
        bottleneck_factor=160,
        groups=40,
        block_sizes=(4, 8, 28, 3),
        increments=(16, 32, 32, 128),
    ),
}
