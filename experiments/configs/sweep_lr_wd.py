"""Random log-uniform search of learning rate x weight decay for the default job, as ONE population.

    cnnjax --config=experiments/configs/sweep_lr_wd.py --workdir=/tmp/cnnjax/sweep --mode=sweep

16 members of LeNet-5 on the offline `mnist5k`, each with its own learning rate,
weight decay, init seed and data order, trained together by one compiled step.
`:smoke` shrinks it for the tests; `:grid` runs a 4x4 grid instead.
"""

from cnnjax.config import base_config
from experiments.configs.base import shrink


def get_config(arg: str | None = None):
    config = base_config()
    config.data.name = "mnist5k"
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 2
    config.model.name = "lenet5"
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.05
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 1.0
    config.batch_size = 64
    config.num_epochs = 10
    config.log_every_steps = 25
    config.sweep.space.optimizer = {
        "learning_rate": "loguniform(1e-3, 1.0)",
        "weight_decay": "loguniform(1e-6, 1e-2)",
    }
    config.sweep.space.seed = "int(0, 1000000)"
    config.sweep.population_size = 16
    config.sweep.sampler = "random"
    config.sweep.strategy = "single"
    variants = set((arg or "").split(",")) - {""}
    unknown = variants - {"smoke", "grid"}
    if unknown:
        raise ValueError(f"Unknown variant(s) {sorted(unknown)}; valid: smoke, grid")
    if "grid" in variants:
        config.sweep.sampler = "grid"
        config.sweep.grid_points = 4
        del config.sweep.space["seed"]
    if "smoke" in variants:
        config.sweep.population_size = 4
        config.sweep.grid_points = 2
        shrink(config, train_examples=256, eval_examples=100, log_every_steps=4, plan="vmap")
    return config
