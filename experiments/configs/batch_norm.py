"""LeNet-5 with and without batch normalisation across learning rates and init scales.

    python -m experiments.batch_norm --workdir=/tmp/exp/batch_norm [--variant=medium|full]

Ioffe & Szegedy (2015) report that BN lets a network train at much higher
learning rates and makes it far less sensitive to the scale of its initial
weights. Two populations (BN off, BN on; `model.batch_norm` changes the
program), each holding every (learning rate, init scale, seed) member: the
learning rate and `model.init_scale` are traced, so one compile per group.

`smoke`: 1,600 of the 2,000-image CIFAR-10 JPEG subset, plain SGD (no momentum, so the learning
rate alone sets the step), batch 32, 100 steps. `full`: TFDS `cifar10`, 30
epochs, three seeds, a finer grid. `medium` (about 11 min of a 2-core CPU's time): the full
grid, one seed, 10,000 CIFAR-10 training JPEGs (2,000 held out for
validation), batch 128, 10 epochs (780 steps).
"""

from experiments.configs.base import WITH_MEDIUM, experiment_config, variant_of

FINE_LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
FINE_INIT_SCALES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def get_config(arg: str | None = None):
    variant = variant_of(arg, WITH_MEDIUM)
    config = experiment_config("lenet5", "sgd")
    config.schedule.name = "constant"
    # Experiment-only keys (not part of the library schema).
    config.experiment = dict(
        learning_rates=(0.01, 0.1, 1.0, 3.0),
        init_scales=(0.1, 0.3, 1.0, 3.0),
        scale_learning_rate=0.1,  # the init-scale sweep runs at this learning rate
        seeds=(0,),
        target_accuracy=0.3,  # "steps to reach": training accuracy over a logging window
        trains_above=0.2,  # a run "trains" when not diverged and its final val accuracy beats this (chance: 0.1)
        train_examples=2000,  # smoke: images read from the archive (shared with other experiments)
        eval_examples=500,
        small_train_examples=None,  # train on a stratified subset of that many (None: all)
    )
    if variant == "full":
        config.batch_size = 128
        config.num_epochs = 30
        config.log_every_steps = 50
        config.eval_every_epochs = 1
        config.experiment.learning_rates = FINE_LEARNING_RATES
        config.experiment.init_scales = FINE_INIT_SCALES
        config.experiment.seeds = (0, 1, 2)
        config.experiment.target_accuracy = 0.5
    elif variant == "medium":
        config.batch_size = 128
        config.num_epochs = 10  # 78 steps per epoch: 780 steps
        config.log_every_steps = 20
        config.eval_every_epochs = 1
        config.experiment.learning_rates = FINE_LEARNING_RATES
        config.experiment.init_scales = FINE_INIT_SCALES
        config.experiment.train_examples = 10000
        config.experiment.eval_examples = 2000
        config.experiment.target_accuracy = 0.4
    else:
        config.batch_size = 32
        config.num_epochs = 2  # 50 steps per epoch: 100 steps
        config.experiment.small_train_examples = 1600  # a stratified subset of the shared 2,000
        config.log_every_steps = 10
        config.eval_every_epochs = 1
    return config
