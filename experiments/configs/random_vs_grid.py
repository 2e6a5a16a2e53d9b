"""Grid vs random search over one important and one unimportant hyperparameter (experiments/random_vs_grid.py).

    python -m experiments.random_vs_grid --workdir=/tmp/exp/random_vs_grid [--variant=smoke|full]

LeNet-5 on the offline `mnist5k` digits, SGD with momentum 0.9 at a constant
learning rate. The search space (`sweep.space`) has two dimensions:

* `optimizer.learning_rate`, log-uniform over four decades: it decides whether
  the net learns at all;
* `optimizer.weight_decay`, log-uniform in [1e-6, 1e-4]: decoupled decay shrinks
  every kernel by a factor (1 - lr * wd) per step, so over T steps the weights
  shrink by at most T * lr * wd: at the useful rates (lr <= 0.03) below 1e-4 in
  `smoke` (T = 16) and about 0.1% in `full` (T = 310); this dimension barely matters.

`sweep.population_size` is the budget of trials per search (a
`grid_points` x `grid_points` grid, or that many random draws).
`smoke`: 512 training images, one epoch of 16 steps. `full`: the 4,000
training images for 5 epochs, budget 16 (a 4 x 4 grid).
"""

from experiments.configs import lenet_mnist
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    variant = arg or "full"
    config = lenet_mnist.get_config(variant)
    config.num_epochs = 5
    config.eval_every_epochs = 1
    config.progress_bar = False
    config.sweep.space.optimizer = {"learning_rate": "loguniform(1e-3, 10.0)", "weight_decay": "loguniform(1e-6, 1e-4)"}
    config.sweep.sampler = "random"
    config.sweep.population_size = 16
    config.sweep.grid_points = 4
    config.sweep.plan = "auto"
    if variant == "smoke":
        # sequential: measured on a 2-core CPU, ~2x faster per member-step than vmap
        shrink(config, train_examples=512, eval_examples=200, log_every_steps=8, plan="sequential")
        config.sweep.population_size = 9
        config.sweep.grid_points = 3
    return config
