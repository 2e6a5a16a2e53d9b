"""ResNets for CIFAR (He et al. 2016, section 4.2) and their plain twins.

Depth 6n+2: a 3x3 conv with 16 filters, three stages of n basic blocks with
16/32/64 filters (the first block of stages 2 and 3 halves the resolution), global
average pooling and a dense classifier. Shortcuts are option A: identity, with
stride-2 subsampling and zero-padded extra channels when the shape changes, so
they add no parameters and `plain=True` (no shortcuts) has the same count.
ResNet-20 has 269,722 parameters.

The n-1 identical blocks of each stage run under `nn.scan`, so the compiled
program (and its compile time) does not grow with depth on accelerators; on
CPU the scan is unrolled (same stacked parameters), since XLA's CPU
convolutions inside a loop are about ten times slower (`cnnjax.kernels.conv.unroll_blocks`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.kernels import conv as conv_kernels
from cnnjax.models import layers


def shortcut_option_a(x: jax.Array, features: int, stride: int) -> jax.Array:
    """Parameter-free shortcut: subsample spatially, zero-pad new channels."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = features - x.shape[-1]
    if extra > 0:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class BasicBlock(nn.Module):
    """conv3-BN-act-conv3-BN, plus the shortcut (unless plain), then act."""

    features: int
    stride: int = 1
    plain: bool = False
    train: bool = False
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, _=None):
        act = layers.get_activation(self.activation)
        conv = functools.partial(
            layers.Conv,
            kernel_size=(3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            impl=self.conv_impl,
        )
        y = conv(self.features, strides=(self.stride, self.stride))(x)
        y = act(layers.batch_norm(self.train)(y))
        y = conv(self.features)(y)
        y = layers.batch_norm(self.train)(y)
        if not self.plain:
            y = y + shortcut_option_a(x, self.features, self.stride)
        # The second output lets the block be the body of `nn.scan`.
        return act(y), None


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; `plain=True` removes every shortcut."""

    depth: int = 20
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)
    plain: bool = False
    activation: str = "relu"
    kernel_init: str = "he_normal_fan_out"
    init_scale: float = 1.0
    scan_blocks: bool = True
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {self.depth}")
        blocks_per_stage = (self.depth - 2) // 6
        block = functools.partial(
            BasicBlock,
            plain=self.plain,
            train=train,
            activation=self.activation,
            kernel_init=self.kernel_init,
            init_scale=self.init_scale,
            conv_impl=self.conv_impl,
        )
        x = layers.Conv(
            self.widths[0],
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            impl=self.conv_impl,
        )(x)
        x = layers.get_activation(self.activation)(layers.batch_norm(train)(x))
        for stage, features in enumerate(self.widths):
            stride = 1 if stage == 0 else 2
            x, _ = block(features=features, stride=stride, name=f"stage{stage + 1}_block1")(x)
            repeats = blocks_per_stage - 1
            if repeats == 0:
                continue
            if self.scan_blocks:
                stack = nn.scan(
                    block,
                    variable_axes={"params": 0, "batch_stats": 0},
                    split_rngs={"params": True, "dropout": True},
                    length=repeats,
                    unroll=conv_kernels.unroll_blocks(repeats),
                )
                x, _ = stack(features=features, name=f"stage{stage + 1}_rest")(x, None)
            else:
                for i in range(repeats):
                    x, _ = block(features=features, name=f"stage{stage + 1}_block{i + 2}")(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
