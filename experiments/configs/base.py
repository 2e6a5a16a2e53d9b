"""Pieces the experiment configs share: the variant names, the experiment defaults, the smoke sizes.

Not a config itself (no `get_config`): the files beside it import it.
"""

VARIANTS = ("smoke", "full")
# Experiments that also have a CPU-scale run on the CIFAR-10 JPEGs (tens of minutes, between the two).
WITH_MEDIUM = ("smoke", "medium", "full")


def variant_of(arg: str | None, valid: tuple[str, ...] = VARIANTS) -> str:
    """`arg` (default `full`); an unknown name is an error that lists the valid ones."""
    variant = arg or "full"
    if variant not in valid:
        raise ValueError(f"Unknown variant {variant!r}; valid choices: {', '.join(valid)}")
    return variant


def experiment_config(model: str, optimizer: str, *, momentum: float | None = None):
    """`base_config()` for an experiment script: `model`, `optimizer`, standardised inputs, no progress bar
    or TensorBoard files (the scripts write their own tables and plots)."""
    from cnnjax.config import base_config  # here: `experiments.common` reads VARIANTS without jax

    config = base_config()
    config.model.name = model
    config.optimizer.name = optimizer
    if momentum is not None:
        config.optimizer.momentum = momentum
    config.data.preprocess = "standardize"
    config.progress_bar = False
    config.tensorboard = False
    return config


def shrink(config, *, train_examples: int, eval_examples: int, log_every_steps: int, plan: str):
    """The smoke size of a sweep on `mnist5k`: one epoch of batch 32 over a subset."""
    config.data.max_train_examples = train_examples
    config.data.max_eval_examples = eval_examples
    config.batch_size = 32
    config.num_epochs = 1
    config.log_every_steps = log_every_steps
    config.sweep.plan = plan
    return config
