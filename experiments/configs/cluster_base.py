"""Recipes shared by the cluster configs (`tpu_*.py`, `gpu_*.py`); not a config itself.

ResNet-50 on imagenet2012 (Goyal et al. 2017 with a cosine decay): SGD with
Nesterov momentum 0.9, learning rate 0.1 per 256 examples of global batch, 5
warmup epochs then a cosine decay to 0 over 90 epochs, L2 1e-4 on the conv and
dense kernels (in the loss, as PyTorch's `weight_decay`), no label smoothing,
bfloat16 compute, streamed input (random-resized 224 crops and flips on the
hosts). It trains on the whole `train` split and evaluates on the official
`validation` split, where the published ResNet-50 accuracies (about 76% top-1)
are measured; imagenet2012 has no labelled test split, so `test` is that split
too.

ResNet-20 on CIFAR-10: `resnet20_cifar10.py` (He et al. 2016) unchanged, spread
over every device.

Both split the global batch over all devices of all processes (`mesh.data=0`);
BatchNorm statistics are taken over the global batch, so the recipe does not
depend on the device count.
"""

from __future__ import annotations

import ml_collections

from cnnjax.config import base_config
from experiments.configs import resnet20_cifar10 as cifar_recipe

IMAGENET_REFERENCE_BATCH = 256  # the learning rate is 0.1 per this many examples
IMAGENET_REFERENCE_LR = 0.1


def parse_variants(arg: str | None, flags: tuple[str, ...], numbers: tuple[str, ...]) -> dict:
    """Parses a variant string such as `smoke` or `nodes=4,smoke`.

    Args:
      arg: the text after `:` in `--config=PATH:ARG` (None or empty: no variant).
      flags: the bare words allowed (each maps to True).
      numbers: the `NAME=N` keys allowed (N a positive integer).

    Returns:
      The variants given, e.g. `{"nodes": 4, "smoke": True}`.
    """
    valid = ", ".join([*flags, *(f"{n}=N" for n in numbers)]) or "none"
    found: dict = {}
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep and key in flags:
            found[key] = True
        elif sep and key in numbers and value.isdigit() and int(value) > 0:
            found[key] = int(value)
        else:
            raise ValueError(f"Unknown variant {item!r}; valid: {valid}")
    return found


def resnet50_imagenet(batch_size: int, *, smoke: bool = False) -> ml_collections.ConfigDict:
    """ResNet-50 on imagenet2012 at a global batch of `batch_size` (lr scaled linearly).

    `smoke`: one epoch over the first 10,240 training images and 2,048
    validation images, at full size, to check a cluster's wiring (every
    process reads its share, the coordinator, checkpoints) in minutes.
    """
    config = base_config()
    config.model.name = "resnet50"
    config.data.name = "imagenet2012"
    config.data.streaming = True
    config.data.image_size = 224
    config.data.augment.flip = True
    config.data.train_split = "train"
    config.data.validation_split = "validation"
    config.data.test_split = "validation"
    config.data.shuffle_buffer = 16_384
    config.data.prefetch_batches = 2
    config.mesh.data = 0
    config.precision = "bfloat16"

    config.optimizer.name = "nesterov"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = IMAGENET_REFERENCE_LR * batch_size / IMAGENET_REFERENCE_BATCH
    config.loss.l2 = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 5.0
    config.num_epochs = 90
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.log_every_steps = 100
    config.eval_every_epochs = 1
    config.checkpoint_every_steps = 2000
    if smoke:
        config.data.train_split = "train[:10240]"
        config.data.validation_split = "validation[:2048]"
        config.data.test_split = "validation[:2048]"
        config.data.shuffle_buffer = 1024
        config.num_epochs = 1
        config.schedule.warmup_epochs = 0.0
        config.log_every_steps = 1
        config.checkpoint_every_steps = 5
    return config


def resnet20_cifar10(arg: str | None, *, precision: str) -> ml_collections.ConfigDict:
    """`resnet20_cifar10.py` (variants `plain`, `smoke`) over every device at `precision`."""
    config = cifar_recipe.get_config(arg)
    config.mesh.data = 0
    config.precision = precision
    return config
