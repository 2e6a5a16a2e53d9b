"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) in two forms.

* `alexnet`: the single-tower variant torchvision ships (from Krizhevsky's
  2014 "one weird trick" paper): 64-192-384-256-256 filters, no LRN, no groups,
  dropout before each hidden FC layer; 61,100,840 parameters for 1000 classes.
* `alexnet_original`: the 2012 network: 96-256-384-384-256 filters, convs 2, 4
  and 5 split into two groups (the two-GPU layout), local response
  normalisation after convs 1 and 2, overlapping 3x3/2 pooling and dropout 0.5
  in the two hidden FC layers; 60,965,224 parameters at 227x227x3.

Both end in an adaptive average pool to 6x6, so any input size gives the same
parameter count (smaller inputs replicate the last feature map).
"""

from __future__ import annotations

import functools

import jax
from flax import linen as nn

from cnnjax.models import layers


class AlexNet(nn.Module):
    """Five conv layers, three FC layers; `original=True` gives the 2012 layout.

    Attributes:
      widths: filters of the five conv layers.
      groups: feature groups of the five conv layers (2 reproduces the two GPUs).
      fc_features: width of the two hidden FC layers.
      local_response_norm: LRN after conv layers 1 and 2.
      stem_padding: padding of the 11x11/4 conv (torchvision: 2; the 2012 paper
        used none at 227x227).
      original_dropout: dropout on the outputs of the two hidden FC layers (2012)
        rather than on their inputs (torchvision).
    """

    num_classes: int = 1000
    widths: tuple[int, ...] = (64, 192, 384, 256, 256)
    groups: tuple[int, ...] = (1, 1, 1, 1, 1)
    fc_features: int = 4096
    local_response_norm: bool = False
    stem_padding: int = 2
    original_dropout: bool = False
    pooling: str = "max"
    activation: str = "relu"
    dropout_rate: float = 0.5
    kernel_init: str = "he_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        conv = functools.partial(nn.Conv, kernel_init=kernel_init)
        # Overlapping pooling (window 3, stride 2), section 3.4 of the paper.
        pool = functools.partial(layers.pool, kind=self.pooling, window=3, stride=2, train=train)
        pad = self.stem_padding
        x = act(conv(self.widths[0], (11, 11), (4, 4), ((pad, pad), (pad, pad)),
                     feature_group_count=self.groups[0])(x))  # fmt: skip
        if self.local_response_norm:
            x = layers.local_response_norm(x)
        x = pool(x)
        x = act(conv(self.widths[1], (5, 5), padding=((2, 2), (2, 2)),
                     feature_group_count=self.groups[1])(x))  # fmt: skip
        if self.local_response_norm:
            x = layers.local_response_norm(x)
        x = pool(x)
        for features, groups in zip(self.widths[2:], self.groups[2:]):
            x = act(conv(features, (3, 3), padding=((1, 1), (1, 1)),
                         feature_group_count=groups)(x))  # fmt: skip
        x = pool(x)
        x = layers.adaptive_avg_pool(x, (6, 6))
        x = x.reshape((x.shape[0], -1))
        dropout = layers.Dropout(self.dropout_rate, deterministic=not train)
        for _ in range(2):
            # torchvision drops the FC inputs; the 2012 paper drops the FC outputs.
            if not self.original_dropout:
                x = dropout(x)
            x = act(nn.Dense(self.fc_features, kernel_init=kernel_init)(x))
            if self.original_dropout:
                x = dropout(x)
        return nn.Dense(self.num_classes, kernel_init=kernel_init)(x)


alexnet = AlexNet
alexnet_original = functools.partial(
    AlexNet,
    widths=(96, 256, 384, 384, 256),
    groups=(1, 2, 1, 2, 2),
    local_response_norm=True,
    stem_padding=0,
    original_dropout=True,
)
