"""LeNet-5 as published (LeCun, Bottou, Bengio & Haffner 1998, section II.B).

Differences from the modern `lenet5`:
  * squashing function f(a) = 1.7159 tanh(2a/3) (appendix A);
  * S2 and S4 are trainable subsampling layers: each map sums its 2x2 window,
    multiplies by one trainable coefficient, adds one trainable bias, squashes;
  * C3 connects each of its 16 maps to a subset of the six S2 maps (Table I);
  * the output layer is made of Euclidean RBF units whose parameter vectors are
    fixed (+1/-1 codes), not learned.

At 32x32x1 input the trainable parameters number exactly 60,000:
C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164.

The RBF prototypes are constants computed from a fixed seed rather than
variables, so they never appear in `params` (nothing can train them) and need no
extra collection. The paper drew them as 7x12 bitmaps of ASCII characters;
random +-1 codes of the same length (84) play the same role for any
`num_classes`. The module returns logits = -(squared distance to each
prototype), so the usual softmax cross-entropy applies.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnnjax.models import layers

# Table I of the paper: the S2 maps feeding each of the 16 C3 maps.
C3_CONNECTIONS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip

_RBF_SEED = 1998


def scaled_tanh(x: jax.Array) -> jax.Array:
    """The paper's squashing function 1.7159 tanh(2x/3) (f(1) = 1, f(-1) = -1)."""
    return 1.7159 * jnp.tanh(2.0 * x / 3.0)


def rbf_prototypes(num_classes: int, features: int = 84) -> np.ndarray:
    """Fixed +-1 prototype vectors of the RBF output units, one row per class."""
    rng = np.random.RandomState(_RBF_SEED)
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=(num_classes, features))


class Subsampling(nn.Module):
    """Trainable subsampling: (sum of each 2x2 window) * coefficient + bias, per map."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        maps = x.shape[-1]
        # 0.25 makes the layer start as an average pool.
        coefficient = self.param("coefficient", nn.initializers.constant(0.25), (maps,))
        bias = self.param("bias", nn.initializers.zeros, (maps,))
        summed = nn.avg_pool(x, (2, 2), (2, 2)) * 4.0
        return summed * coefficient + bias


class PartialConv(nn.Module):
    """C3: one 5x5 convolution per output map over its own subset of input maps."""

    connections: tuple[tuple[int, ...], ...] = C3_CONNECTIONS
    kernel_init: str = "lecun_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Separate small convs give each map exactly len(inputs)*25 + 1 parameters
        # and a correct fan-in for the init; a masked dense kernel would carry
        # (and count) the unused weights.
        outputs = [
            nn.Conv(
                1,
                (5, 5),
                padding="VALID",
                kernel_init=layers.get_init(self.kernel_init, self.init_scale),
                name=f"map{index}",
            )(x[..., list(inputs)])
            for index, inputs in enumerate(self.connections)
        ]
        return jnp.concatenate(outputs, axis=-1)


class LeNet5Original(nn.Module):
    """LeNet-5 of the 1998 paper: C1-S2-C3-S4-C5-F6-RBF output.

    Inputs smaller than 32x32 are zero-padded to 32x32, as the paper centred its
    digits in a 32x32 field.
    """

    num_classes: int = 10
    kernel_init: str = "lecun_normal"
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        del train  # No dropout or BN in the 1998 network.
        kernel_init = layers.get_init(self.kernel_init, self.init_scale)
        height, width = x.shape[-3], x.shape[-2]
        pad_h, pad_w = max(0, 32 - height), max(0, 32 - width)
        if pad_h or pad_w:
            x = jnp.pad(
                x,
                ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
            )
        x = scaled_tanh(nn.Conv(6, (5, 5), padding="VALID", kernel_init=kernel_init, name="C1")(x))
        x = scaled_tanh(Subsampling(name="S2")(x))
        x = scaled_tanh(PartialConv(kernel_init=self.kernel_init, init_scale=self.init_scale, name="C3")(x))
        x = scaled_tanh(Subsampling(name="S4")(x))
        x = scaled_tanh(nn.Conv(120, (5, 5), padding="VALID", kernel_init=kernel_init, name="C5")(x))
        x = x.reshape((x.shape[0], -1))
        x = scaled_tanh(nn.Dense(84, kernel_init=kernel_init, name="F6")(x))
        prototypes = jnp.asarray(rbf_prototypes(self.num_classes, x.shape[-1]), x.dtype)
        squared_distance = jnp.sum(jnp.square(x[:, None, :] - prototypes[None]), axis=-1)
        return -squared_distance
