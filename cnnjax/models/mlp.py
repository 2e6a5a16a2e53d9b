"""A plain multilayer perceptron for the initialisation experiments.

The input (any shape after the batch axis) is flattened, passed through
`depth` hidden layers of `width` units (dense -> optional BN -> activation ->
optional dropout) and a dense output layer. Each hidden activation is recorded
with `sow('intermediates', 'layer{i}', h)`; read them back with
`model.apply(variables, x, train=False, mutable=['intermediates'])`.
"""

from __future__ import annotations

import jax
from flax import linen as nn

from cnnjax.models import layers


class MLP(nn.Module):
    """Fully connected network with configurable depth, width and activation.

    Attributes:
      depth: number of hidden layers (0 gives a linear classifier).
      width: units per hidden layer.
      activation: one of `layers.ACTIVATION_CHOICES`.
      kernel_init: one of `layers.INIT_CHOICES`, applied to every dense kernel.
      init_scale: standard deviation for `normal`, variance multiplier otherwise.
      use_bias: dense layers carry a bias.
      batch_norm: BN between each hidden dense layer and its activation.
      dropout_rate: dropout after each hidden activation.
    """

    num_classes: int = 10
    depth: int = 3
    width: int = 256
    activation: str = "relu"
    kernel_init: str = "he_normal"
    init_scale: float = 1.0
    use_bias: bool = True
    batch_norm: bool = False
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = layers.get_activation(self.activation)
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        x = x.reshape((x.shape[0], -1))
        for index in range(self.depth):
            x = nn.Dense(self.width, use_bias=self.use_bias, kernel_init=kernel_init, name=f"dense{index}")(x)
            if self.batch_norm:
                x = layers.batch_norm(train, name=f"bn{index}")(x)
            x = act(x)
            self.sow("intermediates", f"layer{index}", x)
            x = layers.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, use_bias=self.use_bias, kernel_init=kernel_init, name="head")(x)
