"""Coarse-to-fine search of learning rate and L2 in log space (experiments/coarse_to_fine.py).

    python -m experiments.coarse_to_fine --workdir=/tmp/exp/coarse_to_fine [--variant=smoke|full]
    cnnjax --config=experiments/configs/coarse_to_fine.py:smoke --workdir=/tmp/cnnjax/c2f --mode=sweep

LeNet-5 on the offline `mnist5k` digits, SGD with momentum 0.9 at a constant
learning rate; `cnnjax.tuning.sweep` strategy `coarse_to_fine` with quasi-random
(scrambled Halton) members. Each round keeps the span of the previous round's
`top_k` (plus 10% of the old log-width on each side); when the best value sits
within 10% of an edge the range is widened past that edge instead, with a
warning in summary.json.

The learning-rate range deliberately stops at 3e-3, below the rates that learn
fastest in this short run, so the first round's best learning rate sits on the
high edge: the warning fires, round 1 extends the range upward and the later
rounds narrow around the better rates. (Derived from
`experiments/configs/sweep_coarse_to_fine.py`.)
`smoke`: 512 training images, one epoch of 16 steps, 3 rounds of 6.
`full`: 4,000 images, 5 epochs, 4 rounds of 16.
"""

from experiments.configs import lenet_mnist
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    variant = arg or "full"
    config = lenet_mnist.get_config(variant)
    config.num_epochs = 5
    config.tensorboard = False
    config.sweep.space.optimizer = {"learning_rate": "loguniform(1e-4, 3e-3)"}
    config.sweep.space.loss = {"l2": "loguniform(1e-6, 1e-1)"}
    config.sweep.strategy = "coarse_to_fine"
    config.sweep.sampler = "quasi_random"
    config.sweep.population_size = 16
    config.sweep.rounds = 4
    config.sweep.top_k = 4
    config.sweep.seed = 3
    if variant == "smoke":
        # sequential: measured on a 2-core CPU, ~2x faster per member-step than vmap
        shrink(config, train_examples=512, eval_examples=200, log_every_steps=8, plan="sequential")
        config.sweep.population_size = 6
        config.sweep.rounds = 3
        config.sweep.top_k = 2
    return config
