"""Any `split/class/image` folder (or a .tar.gz of one), e.g. the CIFAR-10 JPEGs.

    cnnjax --config=experiments/configs/image_folder.py --workdir=/tmp/cnnjax/folder \
        --config.data.path=../shared/data/cifar10-train-jpg.tar.gz

Splits the folder lacks are carved from its train split (`data.validation_fraction`,
`data.test_fraction`, stratified, fixed seed). `:small` trains on a 5,000-image subset.
"""

from cnnjax.config import base_config


def get_config(arg: str | None = None):
    config = base_config()
    config.data.name = "image_folder"
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 4
    config.data.augment.flip = True
    config.model.name = "resnet20_cifar"
    config.optimizer.name = "momentum"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.loss.l2 = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 1.0
    config.num_epochs = 30
    config.batch_size = 128
    if arg == "small":
        config.data.max_train_examples = 5000
        config.data.max_eval_examples = 1000
        config.num_epochs = 10
    elif arg:
        raise ValueError(f"Unknown variant {arg!r}; valid: small")
    return config
