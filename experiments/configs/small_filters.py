"""Two small CNNs, blocks of one 5x5 conv or of two 3x3 convs (experiments/small_filters.py).

    python -m experiments.small_filters --workdir=/tmp/exp/small_filters [--variant=smoke|full]

`model.width` is C (the channels of every conv), `model.blocks` the number of
blocks (each followed by 2x2 max pooling; then global average pooling and a
dense layer). Both nets are trained side by side by one compiled step with the
optimiser and schedule built from this config (`optimizer_from_config`).
`smoke`: C=16, 2 blocks, 2 epochs of 640 CIFAR-10 training JPEGs (40 steps of 32).
`full`: C=64, 3 blocks, 30 epochs of TFDS `cifar10` with crop-and-flip augmentation.
The experiment script points `config.data` at CIFAR-10.
"""

from cnnjax.config import base_config
from experiments.configs.base import variant_of


def get_config(arg: str | None = None):
    variant = variant_of(arg)
    config = base_config()
    config.model.name = "small_filters"  # the experiment's own two CNNs, not a registry name
    config.model.width = 64
    config.model.blocks = 3
    config.model.kernel_init = "he_normal"
    config.model.activation = "relu"
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.05
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.batch_size = 128
    config.num_epochs = 30
    config.log_every_steps = 100
    config.eval_every_epochs = 1
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 4
    config.data.augment.flip = True
    if variant == "smoke":
        config.model.width = 16
        config.model.blocks = 2
        config.optimizer.learning_rate = 0.02
        config.batch_size = 32
        config.num_epochs = 2
        config.log_every_steps = 10
        config.eval_every_epochs = 1
        config.data.augment.crop_padding = 0
        config.data.augment.flip = False
    return config
