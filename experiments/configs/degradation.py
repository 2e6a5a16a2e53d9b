"""Plain vs residual nets at two depths: the degradation problem (He et al. 2016, Fig. 6).

    python -m experiments.degradation --workdir=/tmp/exp/degradation [--variant=medium|full]

`full` (the paper's recipe, section 4.2): TFDS `cifar10` with a 45k/5k train/val
split, plain-20, plain-56, ResNet-20, ResNet-56 (option-A shortcuts), SGD momentum
0.9, lr 0.1 divided by 10 at 32k and 48k iterations, stopping at 64k iterations
(epochs 91, 136 and 182 of 45k images at batch 128), weight decay 1e-4 (as L2 in
the loss), batch 128, 4-pixel pad-and-crop plus horizontal flips.

`smoke` keeps the recipe's shape (momentum SGD, step decay at 50% and 75% of
training) but shrinks everything to run in seconds on a CPU: 2,000 CIFAR-10
training JPEGs downsampled to 16x16, widths (8, 16, 32), depth 8 vs 20, no
augmentation, 150 steps, one seed.

`medium` is the paper's comparison (plain-20/56 vs ResNet-20/56, batch 128, the
same schedule shape) sized for a 2-core CPU (about 22 min of CPU time): 10,000
training JPEGs (2,000 held out for validation) downsampled to 16x16, widths
(8, 16, 32), no augmentation, 16 epochs (1,248 steps; lr /10 after epochs 8
and 12), one seed.
"""

from experiments.configs.base import WITH_MEDIUM, experiment_config, variant_of


def get_config(arg: str | None = None):
    variant = variant_of(arg, WITH_MEDIUM)
    config = experiment_config("resnet20_cifar", "momentum", momentum=0.9)
    config.optimizer.learning_rate = 0.1
    config.loss.l2 = 1e-4
    config.schedule.name = "step"
    config.schedule.gamma = 0.1
    # Experiment-only keys (not part of the library schema).
    config.experiment = dict(
        depths=(20, 56),  # shallow, deep
        widths=(16, 32, 64),
        seeds=(0, 1),
        downsample=1,  # average-pool the images by this factor
        train_examples=2000,  # smoke subset sizes
        eval_examples=500,
        final_windows=5,  # "final training error": mean over the last logging windows
    )
    if variant == "full":
        config.batch_size = 128
        config.num_epochs = 182  # 64k iterations of 45k images
        config.schedule.boundaries_epochs = (91, 136)  # 32k and 48k iterations
        config.data.augment.crop_padding = 4
        config.data.augment.flip = True
        config.log_every_steps = 200
        config.eval_every_epochs = 5
    elif variant == "medium":
        config.batch_size = 128
        config.num_epochs = 16  # 78 steps per epoch: 1,248 steps
        config.schedule.boundaries_epochs = (8, 12)  # 50% and 75% of training
        config.experiment.train_examples = 10000
        config.experiment.eval_examples = 2000
        config.experiment.widths = (8, 16, 32)
        config.experiment.seeds = (0,)
        config.experiment.downsample = 2
        config.model.conv_impl = "xla"  # see the smoke variant
        config.model.scan_blocks = False
        config.log_every_steps = 20
        config.eval_every_epochs = 4
    else:
        config.batch_size = 40
        config.num_epochs = 3  # 50 steps per epoch: 150 steps
        config.schedule.boundaries_epochs = (1.5, 2.25)  # 50% and 75% of training, as 32k/64k and 48k/64k
        config.experiment.depths = (8, 20)
        config.experiment.widths = (8, 16, 32)
        config.experiment.seeds = (0,)
        config.experiment.downsample = 2
        config.experiment.final_windows = 3
        # On a CPU, XLA's own convolutions compile fastest and unrolled blocks
        # train faster than `nn.scan`ned ones (its backward pass is slow there).
        config.model.conv_impl = "xla"
        config.model.scan_blocks = False
        config.log_every_steps = 10
        config.eval_every_epochs = 0  # validation at the end only
    return config
