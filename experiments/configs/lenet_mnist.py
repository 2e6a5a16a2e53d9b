"""LeNet-5 on `mnist5k` (offline): the shared base of the search experiments.

    python -m experiments.random_vs_grid --workdir=/tmp/exp/random_vs_grid [--variant=full]

SGD with momentum 0.9 at a constant learning rate (so a search compares
rates, not schedules), batch 64, standardised inputs. The experiments set
their own epochs, space and sweep. Variants: `smoke`, `full`.
"""

from cnnjax.config import base_config
from experiments.configs.base import variant_of


def get_config(arg: str | None = None):
    variant_of(arg)
    config = base_config()
    config.data.name = "mnist5k"
    config.data.preprocess = "standardize"
    config.model.name = "lenet5"
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.schedule.name = "constant"
    config.batch_size = 64
    config.log_every_steps = 50
    return config
