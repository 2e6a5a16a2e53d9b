"""ResNet-20 on CIFAR-10 (He et al. 2016, section 4.2 recipe).

    cnnjax --config=experiments/configs/resnet20_cifar10.py --workdir=/tmp/cnnjax/r20 \
        --config.data.data_dir=DIR [--config.data.download=True]

Variants: `:plain` (plain-20, no shortcuts), `:smoke` (a few steps on a subset).
SGD momentum 0.9, lr 0.1, weight decay 1e-4 (as L2 in the loss, as in the paper),
batch 128, lr /10 at epochs 91 and 136 of 182 (32k and 48k of 64k iterations),
4-pixel padding random crop and horizontal flip, per-channel standardisation.
"""

from cnnjax.config import base_config


def get_config(arg: str | None = None):
    config = base_config()
    config.data.name = "cifar10"
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 4
    config.data.augment.flip = True
    config.model.name = "resnet20_cifar"
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.1
    config.loss.l2 = 1e-4
    config.schedule.name = "step"
    config.schedule.boundaries_epochs = (91, 136)
    config.schedule.gamma = 0.1
    config.num_epochs = 182
    config.batch_size = 128
    config.eval_every_epochs = 5
    config.checkpoint_every_steps = 2000
    variants = set((arg or "").split(",")) - {""}
    unknown = variants - {"plain", "smoke"}
    if unknown:
        raise ValueError(f"Unknown variant(s) {sorted(unknown)}; valid: plain, smoke")
    if "plain" in variants:
        config.model.name = "plain20_cifar"
    if "smoke" in variants:
        config.num_epochs = 1
        config.data.max_train_examples = 512
        config.data.max_eval_examples = 256
        config.schedule.boundaries_epochs = ()
        config.log_every_steps = 2
    return config
