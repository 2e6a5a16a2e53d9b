"""Parameter counts of every registered model, pinned to published references.

Counts are the `params` collection (BN running statistics excluded) at each
model's canonical input, traced with `jax.eval_shape` so no memory is used.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from cnnjax.models import canonical_input_shape, get_model, list_models

# name -> (num_classes, count, source)
REFERENCE_COUNTS: dict[str, tuple[int, int, str]] = {
    "lenet5": (10, 61_706, "modern LeNet-5 (C3 fully connected)"),
    "lenet5_original": (10, 60_000, "LeCun et al. 1998, section II.B"),
    "mlp": (10, 335_114, "784-256-256-256-10, by construction"),
    "alexnet": (1000, 61_100_840, "torchvision"),
    "alexnet_original": (1000, 60_965_224, "Krizhevsky et al. 2012 (60M; exact count of the layout)"),
    "vgg11": (1000, 132_863_336, "torchvision"),
    "vgg11_bn": (1000, 132_868_840, "torchvision"),
    "vgg13": (1000, 133_047_848, "torchvision"),
    "vgg13_bn": (1000, 133_053_736, "torchvision"),
    "vgg16": (1000, 138_357_544, "torchvision"),
    "vgg16_bn": (1000, 138_365_992, "torchvision"),
    "vgg19": (1000, 143_667_240, "torchvision"),
    "vgg19_bn": (1000, 143_678_248, "torchvision"),
    "googlenet": (1000, 6_624_904, "torchvision (aux_logits=False)"),
    "resnet18": (1000, 11_689_512, "torchvision"),
    "resnet34": (1000, 21_797_672, "torchvision"),
    "resnet50": (1000, 25_557_032, "torchvision"),
    "resnet101": (1000, 44_549_160, "torchvision"),
    "resnet152": (1000, 60_192_808, "torchvision"),
    "densenet121": (1000, 7_978_856, "torchvision"),
    "densenet161": (1000, 28_681_000, "torchvision"),
    "densenet169": (1000, 14_149_480, "torchvision"),
    "densenet201": (1000, 20_013_928, "torchvision"),
    # Huang et al. 2017 Table 2: 0.8M. Bias-free convs, BN scale+bias, 10-way dense.
    "densenet_bc100_k12": (10, 769_162, "Huang et al. 2017 (0.8M)"),
    "dpn68": (1000, 12_611_602, "cypw/DPNs via pretrainedmodels/timm"),
    "dpn92": (1000, 37_668_392, "cypw/DPNs via pretrainedmodels/timm"),
    "dpn98": (1000, 61_570_728, "cypw/DPNs via pretrainedmodels/timm"),
    "dpn131": (1000, 79_254_504, "cypw/DPNs via pretrainedmodels/timm"),
    "resnet20_cifar": (10, 269_722, "He et al. 2016 (0.27M)"),
    "resnet32_cifar": (10, 464_154, "He et al. 2016 (0.46M)"),
    "resnet44_cifar": (10, 658_586, "He et al. 2016 (0.66M)"),
    "resnet56_cifar": (10, 853_018, "He et al. 2016 (0.85M)"),
    "resnet110_cifar": (10, 1_727_962, "He et al. 2016 (1.7M)"),
    "resnet1202_cifar": (10, 19_421_274, "He et al. 2016 (19.4M)"),
    "preact_resnet164": (10, 1_703_258, "He et al. 2016b (1.7M)"),
    "preact_resnet1001": (10, 10_327_706, "He et al. 2016b (10.2M)"),
    # Every tensor of the reference `make_net94` (airbench94.py), the frozen whitening weight and BN weights included.
    "airbench94": (10, 1_972_792, "Jordan 2024, airbench94.py layer shapes"),
}
for _depth in (20, 32, 44, 56, 110, 1202):
    # Option-A shortcuts have no parameters, so a plain net counts the same.
    _classes, _count, _ = REFERENCE_COUNTS[f"resnet{_depth}_cifar"]
    REFERENCE_COUNTS[f"plain{_depth}_cifar"] = (_classes, _count, "same as the residual twin")


def count_params(name: str, num_classes: int, input_shape=None, **overrides) -> int:
    model = get_model(name, num_classes, **overrides)
    shape = input_shape or canonical_input_shape(name)

    def init():
        rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
        return model.init(rngs, jnp.zeros((1, *shape)), train=False)

    variables = jax.eval_shape(init)
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def test_every_registered_model_has_a_reference():
    assert sorted(REFERENCE_COUNTS) == list_models()


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_param_count(name):
    num_classes, expected, _ = REFERENCE_COUNTS[name]
    assert count_params(name, num_classes) == expected


def test_googlenet_aux_heads_add_parameters_only_when_asked():
    # torchvision's GoogLeNet with aux_logits=True has the same 13,004,888.
    assert count_params("googlenet", 1000, aux_logits=True) == 13_004_888


@pytest.mark.parametrize("name,shape", [("alexnet", (64, 64, 3)), ("vgg16", (32, 32, 3)),
                                        ("resnet50", (64, 64, 3)), ("lenet5_original", (28, 28, 1))])  # fmt: skip
def test_count_does_not_depend_on_input_size(name, shape):
    num_classes, expected, _ = REFERENCE_COUNTS[name]
    assert count_params(name, num_classes, shape) == expected


def test_scan_and_unrolled_blocks_have_the_same_count():
    scanned = count_params("resnet152", 1000, (64, 64, 3))
    assert count_params("resnet152", 1000, (64, 64, 3), scan_blocks=False) == scanned
