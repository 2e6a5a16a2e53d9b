"""Seven optimisers on LeNet-5 / CIFAR-10, each at its own tuned learning rate (experiments/optimizers.py).

    python -m experiments.optimizers --workdir=/tmp/exp/optimizers [--variant=smoke|full]

Everything but the optimiser is shared: model, data, batch size, epochs, a
constant learning rate (so the comparison is of the update rules, not of a
schedule), no weight decay, default hyperparameters of each optimiser
(`cnnjax.training.optim.OPTIMIZER_HPARAMS`: momentum 0.9, Adam's 0.9/0.999...).
`experiment.grids[name]` is the log grid of peak learning rates tried for
optimiser `name`. `experiment.trainer`: "mixed" trains all optimisers' members
as one population, one compiled program (`experiments/mixed_population.py`);
"library" uses `common.train`, which compiles one population per optimiser
(`optimizer.name` is static there; the learning rate is traced in both).

The grids follow each rule's scale in this library's optax chain:
* `momentum` / `nesterov` are `optax.trace` (v <- 0.9 v + g, no dampening), so
  their effective step is about 10x plain SGD's at the same lr: grids a decade lower.
* `adadelta` is Zeiler's update, already unit-corrected; its lr is a multiplier
  whose paper value is 1.0, so its grid is centred on 1.
* `adagrad` (initial accumulator 0.1), `rmsprop` (decay 0.99) and `adam`
  normalise by gradient magnitude: steps of about lr per weight, lr ~ 1e-3..1e-2.

`experiment.stage2_seeds` > 0 retrains every optimiser at its tuned lr with that
many fresh seeds (one more population per optimiser), so the reported curve is
not the one the lr was picked on.
`smoke`: 3 lrs per optimiser, 1 epoch of 1,024 CIFAR-10 training JPEGs (64 steps of 16), 500 validation
images, no second stage. `full`: 5 lrs per optimiser (half-decade apart), 20 epochs of TFDS `cifar10`
(batch 128), 2 extra seeds in stage 2.
The experiment script points `config.data` at CIFAR-10.
"""

import ml_collections

from cnnjax.config import base_config
from experiments.configs.base import variant_of

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam")

# Centre of each optimiser's grid (a plausible good lr for LeNet-5 at batch 32-128).
CENTRES = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "adadelta": 1.0,
           "rmsprop": 3e-4, "adam": 1e-3}
HALF_DECADE = 10 ** 0.5


def _grid(centre: float, points: int) -> tuple[float, ...]:
    """`points` learning rates half a decade apart, centred on `centre` (odd `points`)."""
    half = points // 2
    return tuple(float(f"{centre * HALF_DECADE ** (i - half):.3g}") for i in range(points))


def get_config(arg: str | None = None):
    variant = variant_of(arg)
    config = base_config()
    config.model.name = "lenet5"
    config.optimizer.name = "sgd"  # replaced member by member
    config.optimizer.weight_decay = 0.0
    config.schedule.name = "constant"
    config.data.preprocess = "standardize"
    config.batch_size = 128
    config.num_epochs = 20
    config.log_every_steps = 50
    config.eval_every_epochs = 1
    config.sweep.plan = "vmap"  # accelerators: every member in one batched program

    config.experiment = ml_collections.ConfigDict()
    config.experiment.train_examples = None  # smoke: size of the JPEG subset
    config.experiment.eval_examples = None
    config.experiment.stage2_seeds = 2
    config.experiment.trainer = "mixed"  # or "library"
    config.experiment.grids = ml_collections.ConfigDict({name: _grid(CENTRES[name], 5) for name in OPTIMIZERS})
    if variant == "smoke":
        config.batch_size = 16
        config.num_epochs = 1
        config.log_every_steps = 4
        config.sweep.plan = "sequential"  # on a CPU: no grouped convolutions, measured faster than vmap
        config.experiment.train_examples = 1024
        config.experiment.eval_examples = 500
        config.experiment.stage2_seeds = 0
        config.experiment.grids = ml_collections.ConfigDict(
            {name: _grid(CENTRES[name], 3) for name in OPTIMIZERS})
    return config
