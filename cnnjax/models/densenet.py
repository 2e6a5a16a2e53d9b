"""DenseNets (Huang et al. 2017): ImageNet 121/161/169/201 and DenseNet-BC for CIFAR.

Inside a dense block every layer sees the concatenation of all earlier feature
maps and adds `growth_rate` new ones; each layer is a bottleneck
BN-ReLU-conv1x1(bn_size * growth_rate)-BN-ReLU-conv3x3(growth_rate). Between
blocks a transition BN -> ReLU -> 1x1 conv (compression 0.5) -> 2x2 average pool
halves both channels and resolution. A final BN-ReLU, global average pooling and
a dense classifier close the network. Convs have no bias.

* ImageNet (torchvision layout): 7x7/2 stem conv + 3x3/2 max pool, four blocks.
  `densenet121` has 7,978,856 parameters for 1000 classes.
* CIFAR DenseNet-BC-100 (k=12): 3x3 stem conv with 2k filters, three blocks of
  (100 - 4) / 6 = 16 layers. With 10 classes it has 769,162 parameters (the paper
  reports 0.8M); see `tests/models/test_param_counts.py` for the breakdown.

Dense blocks do not repeat identically (each layer's input is wider), so they
are unrolled rather than scanned.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnnjax.models import layers


class DenseLayer(nn.Module):
    """BN-act-conv1x1-BN-act-conv3x3 producing `growth_rate` new feature maps."""

    growth_rate: int
    bn_size: int = 4
    dropout_rate: float = 0.0
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        conv = functools.partial(
            nn.Conv, use_bias=False, kernel_init=layers.get_init(self.kernel_init, self.init_scale)
        )
        y = act(layers.batch_norm(train)(x))
        y = conv(self.bn_size * self.growth_rate, (1, 1))(y)
        y = act(layers.batch_norm(train)(y))
        y = conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)))(y)
        y = layers.Dropout(self.dropout_rate, deterministic=not train)(y)
        return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
    """BN -> act -> 1x1 conv to `features` channels -> 2x2/2 average pool."""

    features: int
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = layers.get_activation(self.activation)(layers.batch_norm(train)(x))
        x = nn.Conv(
            self.features,
            (1, 1),
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
        )(x)
        return nn.avg_pool(x, (2, 2), (2, 2))


class DenseNet(nn.Module):
    """DenseNet with bottleneck layers and compressed transitions.

    Attributes:
      block_sizes: dense layers per block.
      growth_rate: feature maps each dense layer adds (k).
      stem_features: filters of the stem conv.
      bn_size: bottleneck width as a multiple of the growth rate.
      compression: channel factor of each transition (0.5 in DenseNet-BC).
      cifar_stem: a single 3x3 conv stem for 32x32 inputs instead of the
        ImageNet 7x7/2 conv and max pool.
    """

    num_classes: int = 1000
    block_sizes: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    stem_features: int = 64
    bn_size: int = 4
    compression: float = 0.5
    cifar_stem: bool = False
    dropout_rate: float = 0.0
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        choices = dict(activation=self.activation, kernel_init=self.kernel_init, init_scale=self.init_scale)
        stem = functools.partial(
            nn.Conv,
            self.stem_features,
            use_bias=False,
            kernel_init=layers.get_init(self.kernel_init, self.init_scale),
            name="stem_conv",
        )
        if self.cifar_stem:
            x = stem((3, 3), padding=((1, 1), (1, 1)))(x)
        else:
            x = stem((7, 7), (2, 2), padding=((3, 3), (3, 3)))(x)
            x = act(layers.batch_norm(train, name="stem_bn")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for block, size in enumerate(self.block_sizes):
            for index in range(size):
                x = DenseLayer(
                    self.growth_rate,
                    self.bn_size,
                    self.dropout_rate,
                    name=f"block{block + 1}_layer{index + 1}",
                    **choices,
                )(x, train=train)
            if block < len(self.block_sizes) - 1:
                features = int(x.shape[-1] * self.compression)
                x = Transition(features, name=f"transition{block + 1}", **choices)(x, train=train)
        x = act(layers.batch_norm(train, name="final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


VARIANTS: dict[str, functools.partial] = {
    "densenet121": functools.partial(DenseNet, block_sizes=(6, 12, 24, 16)),
    "densenet161": functools.partial(DenseNet, block_sizes=(6, 12, 36, 24), growth_rate=48, stem_features=96),
    "densenet169": functools.partial(DenseNet, block_sizes=(6, 12, 32, 32)),
    "densenet201": functools.partial(DenseNet, block_sizes=(6, 12, 48, 32)),
    "densenet_bc100_k12": functools.partial(
        DenseNet,
        num_classes=10,
        block_sizes=(16, 16, 16),
        growth_rate=12,
        stem_features=24,
        cifar_stem=True,
    ),
}
