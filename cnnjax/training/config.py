"""The keys training reads (each with its default) and their checks.

`training_defaults()` is the part of the schema that the training package
defines; `cnnjax.config.base_config` adds the `monitor`, `babysit` and `sweep`
blocks of the packages above it, and `cnnjax.config.validate_config` calls
`training_problems` with their checks.
"""

from __future__ import annotations

import os

import ml_collections
from ml_collections import config_dict

from cnnjax.data import BAD_IMAGE_CHOICES, PREPROCESS_CHOICES, list_datasets
from cnnjax.training.optim import OWN_HPARAM_KEYS, optimizer_problems, schedule_problems
from cnnjax.training.profiling import parse_profile_steps

# Model options that configs may set; None means "the model's own default".
PRECISION_CHOICES = ("float32", "bfloat16")
MODEL_OPTIONS = ("activation", "kernel_init", "init_scale", "dropout_rate", "pooling", "conv_impl")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def training_defaults() -> ml_collections.ConfigDict:
    """Every key that training reads, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameter init (and data order unless data_seed is set)
    c.data_seed = config_dict.placeholder(int)  # data order and augmentation
    c.num_epochs = 10
    c.batch_size = 128
    c.eval_batch_size = 128  # CPU: 0.76x (LeNet-5) and 0.83x (ResNet-20) the eval time of batches of 500
    c.log_every_steps = 50
    c.eval_every_epochs = 1
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 3
    c.progress_bar = True
    c.tensorboard = True
    c.profile_steps = ""  # "A,B": jax.profiler trace of training steps A..B into the workdir

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist5k"
    c.data.data_dir = config_dict.placeholder(str)
    c.data.download = False
    c.data.path = config_dict.placeholder(str)  # for data.name=image_folder
    c.data.train_split = config_dict.placeholder(str)
    c.data.validation_split = config_dict.placeholder(str)
    c.data.test_split = config_dict.placeholder(str)
    c.data.max_train_examples = config_dict.placeholder(int)
    c.data.max_eval_examples = config_dict.placeholder(int)
    c.data.validation_fraction = 0.1
    c.data.test_fraction = 0.1
    c.data.preprocess = "standardize"
    c.data.bad_images = "error"  # image folders: an undecodable image is an error, or `skip` leaves it out
    c.data.augment = ml_collections.ConfigDict()
    c.data.augment.crop_padding = 0
    c.data.augment.flip = False
    # Streaming input (data too large for memory, e.g. imagenet2012): tf.data reads
    # each process's share of the files, decodes, random-resized-crops and flips on
    # the host, and prefetches to the devices. See cnnjax/data/streaming.py.
    c.data.streaming = False
    c.data.image_size = 224  # streaming: training crop / evaluation size (square)
    c.data.shuffle_buffer = 10_000  # streaming: examples in the host shuffle buffer
    c.data.prefetch_batches = 2  # streaming: batches queued on the devices ahead of the step

    # Devices. `mesh.data`: devices the batch is split over (data parallel; 0 = all,
    # across every process). Parameters are replicated; BatchNorm statistics are
    # computed over the global batch.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    # Compute precision: float32, or bfloat16 (bf16 activations and matmuls; the
    # parameters, optimiser state and BatchNorm statistics stay float32).
    c.precision = "float32"

    c.model = ml_collections.ConfigDict()
    c.model.name = "lenet5"
    for key in MODEL_OPTIONS:
        c.model[key] = config_dict.placeholder(float if key in ("init_scale", "dropout_rate") else str)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"
    c.optimizer.learning_rate = 0.1
    c.optimizer.weight_decay = 0.0
    c.optimizer.grad_clip_norm = 0.0
    # Gradient accumulation: one update per this many steps, on their mean gradient;
    # batch_size is then the micro-batch (the update sees batch_size * accumulate_steps).
    c.optimizer.accumulate_steps = 1
    # Polyak averaging: an EMA of the weights, `ema <- d * ema + (1 - d) * w` each step,
    # evaluated (val/test, --mode=eval/predict/export) in place of the weights; 0 = off.
    c.optimizer.ema_decay = 0.0
    for key in OWN_HPARAM_KEYS:
        c.optimizer[key] = config_dict.placeholder(float)

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "constant"
    c.schedule.warmup_epochs = 0.0
    c.schedule.boundaries_epochs = ()
    c.schedule.gamma = 0.1
    c.schedule.decay_rate = 0.96
    c.schedule.decay_every_epochs = 1.0
    c.schedule.final_scale = 0.0

    c.loss = ml_collections.ConfigDict()
    c.loss.l2 = 0.0
    c.loss.l1 = 0.0
    c.loss.label_smoothing = 0.0

    return c


def model_overrides(config: ml_collections.ConfigDict) -> dict:
    """The model options the config sets (those not None), for `get_model`."""
    return {k: v for k, v in config.model.items() if k != "name" and v is not None}


def _choices(values) -> str:
    return ", ".join(values)


def training_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the keys of `training_defaults` (empty when valid).

    Checks names (model, dataset, optimiser, schedule, preprocessing, model
    options) and value ranges. A concept defined elsewhere is checked by one
    function beside it: model options by `cnnjax.models.option_problems`, the
    optimiser and schedule by `optimizer_problems` / `schedule_problems` in
    `cnnjax.training.optim`. The one check that needs the data (batch size vs
    training split) is `validate_against_data`.
    """
    # Imported here: the registry pulls in every model family.
    from cnnjax.models import option_problems

    errors: list[str] = option_problems(config.model.name, model_overrides(config))

    def need(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    datasets = list_datasets()
    need(
        config.data.name in datasets or _is_tfds_name(config.data.name),
        f"data.name={config.data.name!r} is not a data set; valid choices: "
        f"{_choices(datasets)} or any TFDS image classification set",
    )
    if config.data.name == "image_folder":
        need(bool(config.data.path), "data.path must name the image folder (or .tar.gz) when data.name='image_folder'")
        need(
            not config.data.path or os.path.exists(os.path.expanduser(config.data.path)),
            f"data.path={config.data.path!r} does not exist; it must be a directory or a .tar/.tar.gz archive "
            "laid out as root/<split>/<class>/<image>",
        )
    need(
        config.data.get("bad_images", "error") in BAD_IMAGE_CHOICES,
        f"data.bad_images={config.data.get('bad_images')!r} is unknown; valid choices: {_choices(BAD_IMAGE_CHOICES)}",
    )
    need(
        config.data.preprocess in PREPROCESS_CHOICES,
        f"data.preprocess={config.data.preprocess!r} is unknown; valid choices: {_choices(PREPROCESS_CHOICES)}",
    )
    need(config.data.augment.crop_padding >= 0, "data.augment.crop_padding must be >= 0")
    for key in ("validation_fraction", "test_fraction"):
        need(0.0 <= config.data[key] < 1.0, f"data.{key} must be in [0, 1), got {config.data[key]}")

    errors += optimizer_problems(config.optimizer)
    errors += schedule_problems(config.schedule)

    need(config.loss.l2 >= 0, f"loss.l2 must be >= 0, got {config.loss.l2}")
    need(config.loss.l1 >= 0, f"loss.l1 must be >= 0, got {config.loss.l1}")
    need(0 <= config.loss.label_smoothing < 1, f"loss.label_smoothing must be in [0, 1), got {config.loss.label_smoothing}")

    need(
        config.precision in PRECISION_CHOICES,
        f"precision={config.precision!r} is unknown; valid choices: {_choices(PRECISION_CHOICES)}",
    )
    need(config.mesh.data >= 0, f"mesh.data must be >= 0 (0: all devices), got {config.mesh.data}")
    need(config.data.image_size >= 1, f"data.image_size must be >= 1, got {config.data.image_size}")
    need(config.data.shuffle_buffer >= 1, f"data.shuffle_buffer must be >= 1, got {config.data.shuffle_buffer}")
    need(config.data.prefetch_batches >= 1, f"data.prefetch_batches must be >= 1, got {config.data.prefetch_batches}")
    need(config.batch_size >= 1, f"batch_size must be >= 1, got {config.batch_size}")
    need(config.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {config.eval_batch_size}")
    need(config.num_epochs > 0, f"num_epochs must be > 0, got {config.num_epochs}")
    need(config.log_every_steps >= 1, f"log_every_steps must be >= 1, got {config.log_every_steps}")
    need(config.eval_every_epochs >= 0, f"eval_every_epochs must be >= 0 (0: only at the end), got {config.eval_every_epochs}")
    need(config.checkpoint_every_steps >= 1, f"checkpoint_every_steps must be >= 1, got {config.checkpoint_every_steps}")
    try:
        parse_profile_steps(config.get("profile_steps", ""))
    except ValueError as err:
        errors.append(str(err))
    need(config.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {config.keep_checkpoints}")
    return errors


def raise_problems(errors: list[str]) -> None:
    """One `ConfigError` listing every problem (nothing when there is none)."""
    if errors:
        raise ConfigError("Invalid config:\n  - " + "\n  - ".join(errors))


def validate_training(config: ml_collections.ConfigDict) -> None:
    """`ConfigError` listing every problem of the training keys (`training_problems`).

    What a training entry point checks of its config; the whole schema (the
    `monitor`, `babysit` and `sweep` blocks too) is `cnnjax.config.validate_config`.
    """
    raise_problems(training_problems(config))


def validate_against_data(config: ml_collections.ConfigDict, num_train_examples: int) -> None:
    """Checks that need the loaded data: the batch must fit in the training split."""
    if config.batch_size > num_train_examples:
        raise ConfigError(
            f"Invalid config:\n  - batch_size={config.batch_size} is larger than the training split "
            f"of {config.data.name!r} ({num_train_examples} examples)"
        )


def _is_tfds_name(name: str) -> bool:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        return False
    return name in tfds.list_builders(with_community_datasets=False)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`path: old -> new` for every key whose value differs between two config dicts (nested)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs
