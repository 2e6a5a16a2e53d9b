"""TPE in population batches vs random search (experiments/tpe_vs_random.py).

    python -m experiments.tpe_vs_random --workdir=/tmp/exp/tpe_vs_random [--variant=smoke|full]

LeNet-5 on the offline `mnist5k` digits, SGD with momentum at a constant rate,
over learning rate, weight decay and momentum. Each search spends
`sweep.rounds` x `sweep.population_size` trials: random search draws them all
at once; TPE asks for one population batch per round and learns from the
rounds before. `smoke`: 512 training images, one epoch, 2 rounds of 4.
`full`: the 4,000 training images, 3 epochs, 4 rounds of 8.
"""

from experiments.configs import lenet_mnist
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    variant = arg or "full"
    config = lenet_mnist.get_config(variant)
    config.num_epochs = 3
    config.eval_every_epochs = 1
    config.progress_bar = False
    config.sweep.space.optimizer = {"learning_rate": "loguniform(1e-3, 3.0)",
                                    "weight_decay": "loguniform(1e-6, 1e-2)",
                                    "momentum": "one_minus_loguniform(0.5, 0.99)"}
    config.sweep.sampler = "tpe"
    config.sweep.population_size = 8
    config.sweep.rounds = 4
    config.sweep.plan = "auto"
    if variant == "smoke":
        shrink(config, train_examples=512, eval_examples=200, log_every_steps=8, plan="sequential")
        config.sweep.population_size = 4
        config.sweep.rounds = 2
    return config
