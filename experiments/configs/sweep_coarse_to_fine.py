"""Coarse-to-fine search of learning rate and L2 in log space (LeNet-5, offline mnist5k).

    cnnjax --config=experiments/configs/sweep_coarse_to_fine.py --workdir=/tmp/cnnjax/c2f --mode=sweep

Three rounds of 12 members, 3 epochs each; every round narrows each range to the
span of the previous round's top 3, and widens past an edge (a warning in
summary.json) when the best value sits on it. `:smoke` shrinks it for the tests.
"""

from experiments.configs import lenet_mnist
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    config = lenet_mnist.get_config()
    config.schedule.name = "cosine"
    config.num_epochs = 3
    config.log_every_steps = 25
    config.sweep.space.optimizer = {"learning_rate": "loguniform(1e-4, 1.0)"}
    config.sweep.space.loss = {"l2": "loguniform(1e-6, 1e-1)"}
    config.sweep.strategy = "coarse_to_fine"
    config.sweep.sampler = "quasi_random"
    config.sweep.population_size = 12
    config.sweep.rounds = 3
    config.sweep.top_k = 3
    if arg == "smoke":
        config.sweep.population_size = 4
        config.sweep.rounds = 2
        config.sweep.top_k = 2
        shrink(config, train_examples=256, eval_examples=100, log_every_steps=4, plan="vmap")
    elif arg:
        raise ValueError(f"Unknown variant {arg!r}; valid: smoke")
    return config
