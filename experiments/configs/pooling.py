"""Max vs average vs stochastic pooling in LeNet-5 on CIFAR-10 (Zeiler & Fergus 2013).

    python -m experiments.pooling --workdir=/tmp/exp/pooling [--variant=full]

The LeNet-5 recipe of `lenet_cifar.py`; `model.pooling` changes the program, so
each pooling kind is its own population (its seeds train together).
"""

from experiments.configs import lenet_cifar

POOLINGS = ("max", "avg", "stochastic")


def get_config(arg: str | None = None):
    config = lenet_cifar.get_config(arg)
    config.experiment.poolings = POOLINGS
    return config
