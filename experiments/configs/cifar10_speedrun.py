"""CIFAR-10 speed run: the airbench94 recipe (Jordan 2024) to 94% validation accuracy.

    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun                  # full run (GPU)
    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun \
        --config=experiments/configs/cifar10_speedrun.py:cpu_budget                   # fixed CPU budget
    python -m experiments.cifar10_speedrun --workdir=/tmp/speedrun \
        --config=experiments/configs/cifar10_speedrun.py:smoke                        # seconds (tests)

`--precision=float32|bfloat16`, `--runs=N` and `--config.KEY=VALUE` adjust a
run (see `experiments/cifar10_speedrun.py`).

Data: the shared CIFAR-10 JPEG archive (`../shared/data/cifar10-train-jpg.tar.gz`,
`--data_path` elsewhere), split 45,000 train / 5,000 validation (10% of every
class, fixed seed; `cnnjax.data.splits.stratified_split`). Nothing is read
from TFDS or the official test split.

Recipe (the reference's `hyp` of `airbench94.py`): the `airbench94` net
(widths 64/256/256, frozen 2x2 patch-whitening conv fitted to 5,000 training
images with eps 5e-4, its bias trained for the first 3 epochs only, BN
momentum 0.6 with frozen scales, GELU, logits x 1/9); Nesterov SGD, batch
1024, 9.9 epochs, summed label-smoothed (0.2) cross-entropy. Learning rate,
momentum and weight decay are in the reference's decoupled form: `lr` 11.5
and `weight_decay` 0.0153 are per 1024 examples, divided by
1024 (1 + 1 / (1 - momentum)) to give the SGD step (so they keep their
meaning at another batch size), BN biases get `bias_scaler` = 64 x the rate
and the same decay. The rate rises linearly from 0.2x to 1x over the first 23%
of steps, then falls to 0.07x. Lookahead: every 5 steps the weights (and BN
statistics) are averaged into a slow copy with decay 0.95^5 (t/T)^3, which
they then take; the last step ends on the slow copy. Augmentation on device:
2-pixel random translation (reflect padding) and alternating flip (a random
half flipped in even epochs, the other half in odd ones). Evaluation: test-time
augmentation level 2 (mirror, plus one-pixel translations up-left and
down-right at weight 1/4 each).

Variants: default (the full run, bfloat16 compute with float32 parameters);
`cpu_budget` (the same net and recipe in float32 on fixed stratified subsets:
2,000 training images for 3 epochs at batch 200, i.e. 30 steps, and 1,000
validation images; about five minutes on a 2-core CPU); `smoke` (a narrow
net on a few hundred images, for the tests).
"""

import ml_collections

VARIANTS = ("full", "cpu_budget", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "full"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; valid choices: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.target_accuracy = 0.94
    c.precision = "bfloat16"  # float32 | bfloat16 (bf16 compute, float32 parameters and BN statistics)

    c.data = ml_collections.ConfigDict()
    c.data.path = ""  # empty: the shared archive (experiments.common.find_cifar_archive)
    c.data.validation_fraction = 0.1  # of every class: 45,000 / 5,000
    c.data.max_train_examples = ml_collections.config_dict.placeholder(int)  # None: all 45,000
    c.data.max_eval_examples = ml_collections.config_dict.placeholder(int)  # None: all 5,000

    c.model = ml_collections.ConfigDict()
    c.model.name = "airbench94"
    c.model.widths = (64, 256, 256)
    c.model.bn_momentum = 0.6
    c.model.bn_epsilon = 1e-12
    c.model.logit_scale = 1.0 / 9.0
    c.model.conv_impl = "auto"

    c.whiten = ml_collections.ConfigDict()
    c.whiten.kernel_size = 2
    c.whiten.eps = 5e-4
    c.whiten.examples = 5000  # training images the patch covariance is estimated from
    c.whiten.bias_epochs = 3.0  # the whitening bias is trained this long, then frozen

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "nesterov"
    c.optimizer.learning_rate = 11.5  # per 1024 examples (decoupled, see the docstring)
    c.optimizer.momentum = 0.85
    c.optimizer.weight_decay = 0.0153  # per 1024 examples, decoupled from the learning rate
    c.optimizer.bias_scaler = 64.0  # BN biases: learning rate x this (weight decay unchanged)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.warmup_fraction = 0.23  # of all steps, rising from `start` to 1
    c.schedule.start = 0.2
    c.schedule.end = 0.07

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.2

    c.lookahead = ml_collections.ConfigDict()
    c.lookahead.every_steps = 5
    c.lookahead.decay = 0.95**5  # slow-weights decay at the end of training
    c.lookahead.power = 3.0  # decay(t) = decay * (t / T) ** power

    c.augment = ml_collections.ConfigDict()
    c.augment.translate = 2  # pixels, reflect padding
    c.augment.flip = "alternate"  # alternate | random | none

    c.eval = ml_collections.ConfigDict()
    c.eval.tta_level = 2  # final evaluation: 0 none, 1 mirror, 2 mirror + translations
    c.eval.epoch_tta_level = 0  # per-epoch evaluations (outside the clock)
    c.eval.batch_size = 1000

    c.batch_size = 1024
    c.num_epochs = 9.9

    if variant == "cpu_budget":
        c.precision = "float32"  # bf16 matmuls are emulated, hence slow, on a CPU
        c.data.max_train_examples = 2000
        c.data.max_eval_examples = 1000
        c.whiten.examples = 2000
        c.batch_size = 200
        c.num_epochs = 3.0
        c.whiten.bias_epochs = 1.0
        c.eval.batch_size = 100
    elif variant == "smoke":
        c.precision = "float32"
        c.model.widths = (8, 16, 16)
        c.data.max_train_examples = 256
        c.data.max_eval_examples = 100
        c.whiten.examples = 128
        c.batch_size = 64
        c.num_epochs = 1.75  # 7 steps of 4 per epoch: the second epoch stops early
        c.whiten.bias_epochs = 1.0
        c.eval.batch_size = 50
    return c
