"""Model registry: every architecture by name.

`get_model(name, num_classes, **overrides)` returns a `flax.linen.Module` called as
`module(x, *, train)` on NHWC float input. Trainable parameters live in `params`,
BatchNorm running statistics in `batch_stats`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

from flax import linen as nn

from cnnjax.kernels.conv import CONV_IMPL_CHOICES, onednn_problem
from cnnjax.models import airbench, alexnet, densenet, dpn, layers, preact_resnet, resnet, vgg
from cnnjax.models.airbench import Airbench94
from cnnjax.models.googlenet import GoogLeNet
from cnnjax.models.lenet import LeNet5
from cnnjax.models.lenet_original import LeNet5Original
from cnnjax.models.mlp import MLP
from cnnjax.models.resnet_cifar import CifarResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
}
for _depth in (20, 32, 44, 56, 110, 1202):
    _REGISTRY[f"resnet{_depth}_cifar"] = functools.partial(CifarResNet, depth=_depth)
    _REGISTRY[f"plain{_depth}_cifar"] = functools.partial(CifarResNet, depth=_depth, plain=True)
_REGISTRY.update(
    {
        "lenet5_original": LeNet5Original,
        "alexnet": alexnet.alexnet,
        "alexnet_original": alexnet.alexnet_original,
        "googlenet": GoogLeNet,
        "mlp": MLP,
        "airbench94": Airbench94,
    }
)
for _family in (vgg, resnet, preact_resnet, densenet, dpn):
    _REGISTRY.update(_family.VARIANTS)

# Input each model was designed for (HWC): what `cnnjax.summary` measures at.
_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)
_CANONICAL_INPUT: dict[str, tuple[int, int, int]] = {
    "lenet5": (32, 32, 1),
    "lenet5_original": (32, 32, 1),
    "mlp": (28, 28, 1),
    # 227 makes the unpadded 11x11/4 stem of the 2012 paper come out at 55x55.
    "alexnet_original": (227, 227, 3),
    "airbench94": _CIFAR,
}

# Nominal depth: weight layers on the longest input-output path, as each paper counts them.
_NOMINAL_DEPTH: dict[str, int] = {
    "lenet5": 5,
    "lenet5_original": 7,
    "alexnet": 8,
    "alexnet_original": 8,
    "googlenet": 22,
    "dpn68": 68,
    "dpn92": 92,
    "dpn98": 98,
    "dpn131": 131,
    "densenet_bc100_k12": 100,
    # Whitening conv, six 3x3 convs, the linear head.
    "airbench94": 8,
}


def list_models() -> list[str]:
    """Names accepted by `get_model`, sorted."""
    return sorted(_REGISTRY)


def _module_class(factory: Callable[..., nn.Module]) -> type:
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory


def model_fields(name: str) -> list[str]:
    """The overridable attributes of a registered model (for config validation)."""
    cls = _module_class(_REGISTRY[name])
    return sorted(
        f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name") and f.init
    )


def option_choices(name: str) -> dict[str, tuple[str, ...]]:
    """The valid values of each named option of model `name` (options without a list take any value)."""
    choices = {
        "activation": layers.ACTIVATION_CHOICES,
        "kernel_init": layers.INIT_CHOICES,
        "pooling": layers.POOLING_CHOICES,
        "conv_impl": CONV_IMPL_CHOICES,
    }
    if name.startswith("airbench"):  # its own extras: PyTorch's exact GELU and identity-start kernels
        choices["activation"] = airbench.ACTIVATIONS
        choices["kernel_init"] = (*layers.INIT_CHOICES, "dirac_uniform")
    return choices


def option_problems(name: str, options: dict[str, Any]) -> list[str]:
    """What is wrong with `model.name` and the model `options` a config sets (empty when valid).

    Each message names its `model.*` key and what is valid.
    """
    errors = []
    known = name in _REGISTRY
    if not known:
        errors.append(f"model.name={name!r} is not a model; valid choices: {', '.join(list_models())}")
    fields = model_fields(name) if known else []
    valid_values = option_choices(name)
    for key, value in options.items() if known else ():
        if key not in fields:
            errors.append(f"model.{key}={value!r}: model {name!r} has no option {key!r}; "
                          f"its options are: {', '.join(f for f in fields if f != 'num_classes')}")
        elif key in valid_values and value not in valid_values[key]:
            errors.append(f"model.{key}={value!r} is unknown; valid choices: {', '.join(valid_values[key])}")
    if known and "conv_impl" in fields and (problem := onednn_problem(options.get("conv_impl", ""))):
        errors.append(f"model.{problem} (valid choices: {', '.join(CONV_IMPL_CHOICES)}; auto uses it where it runs)")
    dropout = options.get("dropout_rate")
    if dropout is not None and not 0 <= dropout < 1:
        errors.append(f"model.dropout_rate must be in [0, 1), got {dropout}")
    return errors


def canonical_input_shape(name: str) -> tuple[int, int, int]:
    """The (height, width, channels) input the registered model `name` was designed for."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(list_models())}")
    if name in _CANONICAL_INPUT:
        return _CANONICAL_INPUT[name]
    if name.endswith("_cifar") or name.startswith(("preact_resnet", "densenet_bc")):
        return _CIFAR
    return _IMAGENET


def nominal_depth(name: str) -> int:
    """Depth of `name` as its paper counts it (weight layers on the longest path).

    For `mlp` this is its default: hidden layers plus the output layer.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(list_models())}")
    if name in _NOMINAL_DEPTH:
        return _NOMINAL_DEPTH[name]
    if name == "mlp":
        return MLP.depth + 1
    return int(re.search(r"\d+", name).group())


def get_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """Builds the registered model `name` with `num_classes` outputs.

    Raises:
      ValueError: unknown name (the message lists the valid ones) or an override
        the model does not have (the message lists the ones it has).
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid choices: {', '.join(list_models())}")
    fields = model_fields(name)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"Model {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(f for f in fields if f != 'num_classes')}"
        )
    return _REGISTRY[name](num_classes=num_classes, **overrides)
