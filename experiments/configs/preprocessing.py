"""Input preprocessing for LeNet-5 on CIFAR-10: none vs channel mean vs mean image vs standardise.

    python -m experiments.preprocessing --workdir=/tmp/exp/preprocessing [--variant=full]

The LeNet-5 recipe of `lenet_cifar.py`. `data.preprocess` sets the statistics
(computed on the training split only) that every batch is normalised with:
`none` feeds x/255 in [0, 1]; `channel_mean` subtracts one mean per colour
channel; `mean_image` subtracts the per-pixel mean image; `standardize` also
divides by the per-channel std.
"""

from cnnjax.data import PREPROCESS_CHOICES
from experiments.configs import lenet_cifar


def get_config(arg: str | None = None):
    config = lenet_cifar.get_config(arg)
    config.experiment.preprocess = PREPROCESS_CHOICES
    return config
