"""Forward passes in both modes and one SGD train step, for every model.

The default run covers every family and code path with reduced depths and
widths; `-m slow` runs every registered model at its real depth (widths and
inputs still small, set through the models' fields).
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from cnnjax.models import get_model, list_models

NUM_CLASSES = 5
BATCH = 2

_TINY_ALEXNET = dict(widths=(8, 8, 8, 8, 8), fc_features=16)
_TINY_VGG = dict(widths=(4, 4, 8, 8, 8), fc_features=16)
_TINY_RESNET = dict(widths=(4, 4, 8, 8), stem_width=4)
_TINY_CIFAR_RESNET = dict(widths=(4, 8, 8))
_TINY_PREACT = dict(widths=(8, 8, 16), stem_width=4)
_TINY_DENSENET = dict(growth_rate=4, stem_features=8, bn_size=2)
_TINY_DPN = dict(base_width=8, groups=4, stem_features=8, increments=(2, 2, 4, 4))

# name -> (overrides, input shape HWC)
CASES: dict[str, tuple[dict, tuple[int, int, int]]] = {
    "lenet5": ({}, (28, 28, 1)),
    "lenet5_original": ({}, (32, 32, 1)),
    "mlp": (dict(depth=2, width=16, batch_norm=True, dropout_rate=0.1), (8, 8, 1)),
    "alexnet": (_TINY_ALEXNET, (64, 64, 3)),
    "alexnet_original": (_TINY_ALEXNET, (96, 96, 3)),
    "googlenet": ({}, (32, 32, 3)),
    "densenet_bc100_k12": (dict(growth_rate=4, stem_features=8), (16, 16, 3)),
    "airbench94": (dict(widths=(4, 8, 8)), (16, 16, 3)),
}
for _name in list_models():
    if _name.startswith("vgg"):
        CASES[_name] = (_TINY_VGG, (32, 32, 3))
    elif _name.startswith("resnet") and not _name.endswith("_cifar"):
        CASES[_name] = (_TINY_RESNET, (32, 32, 3))
    elif _name.endswith("_cifar"):
        CASES[_name] = (_TINY_CIFAR_RESNET, (16, 16, 3))
    elif _name.startswith("preact_resnet"):
        CASES[_name] = (_TINY_PREACT, (16, 16, 3))
    elif _name.startswith("densenet") and _name not in CASES:
        CASES[_name] = (_TINY_DENSENET, (32, 32, 3))
    elif _name.startswith("dpn"):
        CASES[_name] = (_TINY_DPN, (32, 32, 3))

# Fast representatives of every family and code path (reduced depths where a
# field allows); the full-depth registered models above run under `-m slow`.
FAST_CASES: dict[str, tuple[str, dict, tuple[int, int, int]]] = {
    "lenet5_stochastic_pool": ("lenet5", dict(pooling="stochastic"), (28, 28, 1)),
    "lenet5_original": ("lenet5_original", {}, (32, 32, 1)),
    "mlp_bn_dropout": ("mlp", *CASES["mlp"]),
    "alexnet_original": ("alexnet_original", _TINY_ALEXNET, (96, 96, 3)),
    # Fewer widths than stages drop the later stages (zip), keeping tests quick.
    "vgg11_bn_2stages": ("vgg11_bn", dict(_TINY_VGG, widths=(4, 8)), (16, 16, 3)),
    "resnet_bottleneck": ("resnet50", dict(_TINY_RESNET, stage_sizes=(2, 1)), (32, 32, 3)),
    "preact_resnet11": ("preact_resnet164", dict(_TINY_PREACT, depth=11), (16, 16, 3)),
    "densenet_small": ("densenet121", dict(_TINY_DENSENET, block_sizes=(2, 1)), (16, 16, 3)),
    "dpn_small": ("dpn68", dict(_TINY_DPN, block_sizes=(2, 1)), (16, 16, 3)),
    "airbench94_narrow": ("airbench94", *CASES["airbench94"]),
}

# Compile faster (no backend optimisation): the tests check behaviour, not speed.
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# In eval mode, freshly initialised BN (running mean 0, variance 1) is the
# identity, so each of ResNet-1202's 600 residual additions roughly doubles the
# activation variance and the logits overflow to inf/nan. That is the
# architecture at init (torchvision's behaves alike), not a bug; train mode,
# which normalises with batch statistics, is still checked.
EVAL_OVERFLOWS_AT_INIT = {"resnet1202_cifar"}


def test_every_registered_model_has_a_case():
    assert sorted(CASES) == list_models()


def _compile(fn, *args):
    return jax.jit(fn).lower(*args).compile(_COMPILER_OPTIONS)


def _check_forward_and_train_step(name, overrides, shape):
    model = get_model(name, NUM_CLASSES, **overrides)
    # NumPy inputs and checks: eager jnp ops would each compile for every new shape.
    x = np.random.RandomState(0).normal(size=(BATCH, *shape)).astype(np.float32)
    labels = np.arange(BATCH) % NUM_CLASSES

    def step(x, key):
        """Init, eval-mode forward, then one SGD step on train-mode cross-entropy.

        One jitted program: each separate compile costs seconds on a CPU.
        """
        init_key, dropout_key, step_key = jax.random.split(key, 3)
        variables = model.init({"params": init_key, "dropout": dropout_key}, x, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        eval_logits = model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)

        def loss_fn(params):
            outputs, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": step_key},
            )
            logits = outputs[0] if isinstance(outputs, tuple) else outputs
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        new_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        new_stats = updates.get("batch_stats", {})
        return eval_logits, loss, logits, params, new_params, batch_stats, new_stats

    key = jax.random.PRNGKey(0)
    outputs = _compile(step, x, key)(x, key)
    eval_logits, loss, train_logits, params, new_params, batch_stats, new_stats = outputs
    assert eval_logits.shape == train_logits.shape == (BATCH, NUM_CLASSES)
    if name not in EVAL_OVERFLOWS_AT_INIT:
        assert np.all(np.isfinite(eval_logits))
    assert np.isfinite(loss)

    def differs(a, b):
        return bool(np.any(np.asarray(a) != np.asarray(b)))

    assert any(jax.tree.leaves(jax.tree.map(differs, params, new_params)))
    if batch_stats:
        assert all(jax.tree.leaves(jax.tree.map(differs, batch_stats, new_stats)))


@pytest.mark.parametrize("case", sorted(FAST_CASES))
def test_forward_and_train_step_small(case):
    _check_forward_and_train_step(*FAST_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_train_step_every_model(name):
    overrides, shape = CASES[name]
    _check_forward_and_train_step(name, overrides, shape)
