"""Learning-rate schedules, with and without linear warmup, on LeNet-5 / CIFAR-10 (experiments/lr_schedules.py).

    python -m experiments.lr_schedules --workdir=/tmp/exp/lr_schedules [--variant=smoke|full]

One optimiser (SGD with momentum 0.9, weight decay 5e-4) at one peak learning
rate for every run; only the shape of lr(t) / peak differs
(`cnnjax.training.optim.make_lr_scale`):
* `constant`: 1.
* `step`: times `gamma` = 0.1 at 50% and 75% of training (He et al. 2016 divide
  by 10 at 32k and 48k of 64k iterations on CIFAR-10).
* `exponential`: times `decay_rate` per epoch, applied smoothly, chosen so that
  the last epoch runs at about 3-4% of the peak.
* `cosine`: half a cosine from the peak to 0 (Loshchilov & Hutter 2017, without restarts).
`experiment.warmup_epochs`: the warmup length of the "with warmup" runs (a
linear ramp from 0 to the peak, Goyal et al. 2017; the schedule starts after it).
All 8 runs (x `experiment.seeds`) train as one population, one compiled program
(`experiments/mixed_population.py`).
`smoke`: 3 epochs of 512 CIFAR-10 training JPEGs (96 steps of 16), 500 validation images, 1 seed, warmup 0.5
epoch. `full`: 30 epochs of TFDS `cifar10` (batch 128) with crop-and-flip augmentation, 2 seeds, warmup 2 epochs.
The experiment script points `config.data` at CIFAR-10.
"""

import ml_collections

from cnnjax.config import base_config
from experiments.configs.base import variant_of

SCHEDULES = ("constant", "step", "exponential", "cosine")


def get_config(arg: str | None = None):
    variant = variant_of(arg)
    config = base_config()
    config.model.name = "lenet5"
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.02  # the peak of every schedule
    config.optimizer.weight_decay = 5e-4
    config.schedule.name = "constant"  # replaced member by member
    config.schedule.gamma = 0.1
    config.data.preprocess = "standardize"
    config.data.augment.crop_padding = 4
    config.data.augment.flip = True
    config.batch_size = 128
    config.num_epochs = 30
    config.log_every_steps = 50
    config.eval_every_epochs = 1
    config.sweep.plan = "vmap"  # accelerators: one program for all runs

    config.experiment = ml_collections.ConfigDict()
    config.experiment.train_examples = None  # smoke: size of the JPEG subset
    config.experiment.eval_examples = None
    config.experiment.seeds = 2
    config.experiment.warmup_epochs = 2.0
    config.experiment.step_fractions = (0.5, 0.75)  # of num_epochs: where `step` multiplies by gamma
    config.experiment.final_fraction = 0.035  # `exponential`: lr / peak reached after num_epochs epochs
    if variant == "smoke":
        config.batch_size = 16
        config.num_epochs = 3
        config.log_every_steps = 4
        config.data.augment.crop_padding = 0
        config.data.augment.flip = False
        config.sweep.plan = "sequential"  # on a CPU: no grouped convolutions, measured faster than vmap
        config.experiment.train_examples = 512
        config.experiment.eval_examples = 500
        config.experiment.seeds = 1
        config.experiment.warmup_epochs = 0.5
    epochs = config.num_epochs
    config.schedule.boundaries_epochs = tuple(f * epochs for f in config.experiment.step_fractions)
    config.schedule.decay_every_epochs = 1.0
    config.schedule.decay_rate = config.experiment.final_fraction ** (1.0 / epochs)
    return config
