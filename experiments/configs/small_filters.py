"""Small CNNs whose blocks are one 5x5 conv or two 3x3 convs (experiments/small_filters.py).

    python experiments/small_filters.py --workdir=/tmp/exp/small_filters [--variant=smoke|full]

The two models (`small_filters_5x5`, `small_filters_3x3`) are registered by the
experiment for the duration of its run; `model.width` (C, channels of every
conv) and `model.blocks` (blocks, each followed by 2x2 max pooling) are their
options. SGD momentum 0.9, cosine schedule, per-channel standardisation.
`smoke`: C=16, 2 blocks, a few hundred steps on the 2,000-image CIFAR-10 subset.
`full`: C=64, 3 blocks, 30 epochs of TFDS `cifar10` with crop-and-flip augmentation.
The data (`config.data`) is pointed at CIFAR-10 by the experiment script.
"""

from cnnjax.training.config import base_config

VARIANTS = ("smoke", "full")


def get_config(arg: str | None = None):
    variant = arg or "full"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
    config = base_config()
    config.model.name = "small_filters_3x3"
    config.model.width = 64
    config.model.blocks = 3
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.05
    config.loss.l2 = 5e-4
    config.schedule.name = "cosine"
    config.batch_size = 128
    config.num_epochs = 30
    config.log_every_steps = 100
    config.eval_every_epochs = 1
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 4
    config.data.augment.flip = True
    config.progress_bar = False
    config.tensorboard = False
    if variant == "smoke":
        config.model.width = 16
        config.model.blocks = 2
        config.batch_size = 64
        config.num_epochs = 6
        config.log_every_steps = 10
        config.eval_every_epochs = 2
        config.data.augment.crop_padding = 0
        config.data.augment.flip = False
    return config
