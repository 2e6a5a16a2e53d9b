"""LeNet-5 on CIFAR-10: the shared base of the pooling, preprocessing and regularisation experiments.

    python -m experiments.pooling --workdir=/tmp/exp/pooling [--variant=full]

`smoke`: 2,000 CIFAR-10 training JPEGs (500 carved for validation), batch 50,
80 steps, one seed, validation at the end. `full`: TFDS `cifar10` (45k/5k), batch 128, 40 epochs, three
seeds. SGD with momentum 0.9 and a cosine learning-rate decay; no augmentation
and no weight decay, so the compared option is the only regulariser.
"""

from experiments.configs.base import experiment_config, variant_of


def get_config(arg: str | None = None):
    variant = variant_of(arg)
    config = experiment_config("lenet5", "momentum", momentum=0.9)
    config.optimizer.learning_rate = 0.03
    config.schedule.name = "cosine"
    # Experiment-only keys (not part of the library schema).
    config.experiment = dict(seeds=(0,), train_examples=2000, eval_examples=500)
    if variant == "full":
        config.batch_size = 128
        config.num_epochs = 40
        config.log_every_steps = 50
        config.eval_every_epochs = 1
        config.experiment.seeds = (0, 1, 2)
    else:
        config.batch_size = 50
        config.num_epochs = 2  # 40 steps per epoch: 80 steps
        config.log_every_steps = 10
        config.eval_every_epochs = 0  # validation at the end only (each evaluation costs time on a CPU)
    return config
