"""Pandas (babysit one model) vs caviar (a population) in the same wall clock (experiments/pandas_vs_caviar.py).

    python -m experiments.pandas_vs_caviar --workdir=/tmp/exp/pandas_vs_caviar [--variant=smoke|full]

LeNet-5 on the offline `mnist5k` digits, SGD with momentum 0.9 at a constant
learning rate. Both approaches search `optimizer.learning_rate` within
`sweep.space` (log-uniform); caviar trains `sweep.population_size` random
draws of it as one population, pandas trains one model at a time, each trial
informed by the last, until caviar's wall time is spent.
`smoke`: 512 training images, one epoch of 16 steps, a population of 8.
`full`: 4,000 images, 3 epochs, a population of 32.
"""

from experiments.configs import lenet_mnist
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    variant = arg or "full"
    config = lenet_mnist.get_config(variant)
    config.optimizer.learning_rate = 1e-3  # pandas starts here, a cautious first guess
    config.num_epochs = 3
    config.progress_bar = False
    config.sweep.space.optimizer = {"learning_rate": "loguniform(1e-4, 1.0)"}
    config.sweep.sampler = "random"
    config.sweep.population_size = 32
    config.sweep.plan = "auto"
    if variant == "smoke":
        # sequential: measured on a 2-core CPU, ~2x faster per member-step than vmap
        shrink(config, train_examples=512, eval_examples=200, log_every_steps=8, plan="sequential")
        config.sweep.population_size = 8
    return config
