"""Model-specific behaviour: registry metadata, GoogLeNet heads, MLP, LeNet-1998."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.models import (
    canonical_input_shape,
    get_model,
    googlenet,
    lenet_original,
    list_models,
    model_fields,
    nominal_depth,
    option_problems,
)

RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def test_registry_metadata_for_every_model():
    for name in list_models():
        shape = canonical_input_shape(name)
        assert len(shape) == 3 and nominal_depth(name) > 0
        fields = model_fields(name)
        assert "num_classes" in fields
        if name != "lenet5_original":  # the 1998 net has fixed tanh units
            assert {"kernel_init", "init_scale"} <= set(fields), name
    assert canonical_input_shape("resnet50") == (224, 224, 3)
    assert canonical_input_shape("preact_resnet164") == (32, 32, 3)
    assert canonical_input_shape("lenet5") == (32, 32, 1)
    assert nominal_depth("preact_resnet1001") == 1001
    assert nominal_depth("googlenet") == 22


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "alexnet_original", "vgg16"])
def test_pooling_is_a_choice(name):
    assert "pooling" in model_fields(name)


def test_unknown_override_is_rejected():
    with pytest.raises(ValueError, match="has no option"):
        get_model("vgg16", 10, depth_multiplier=2)


def test_option_problems_name_the_key_and_what_is_valid():
    assert option_problems("lenet5", {"activation": "relu", "dropout_rate": 0.5}) == []
    assert option_problems("airbench94", {"kernel_init": "dirac_uniform"}) == []
    (problem,) = option_problems("lenet5", {"kernel_init": "dirac_uniform"})
    assert problem.startswith("model.kernel_init='dirac_uniform' is unknown; valid choices: ")
    assert "dirac_uniform" not in problem.split(": ", 1)[1]
    (problem,) = option_problems("resnet20_cifar", {"pooling": "max"})
    assert problem.startswith("model.pooling='max': model 'resnet20_cifar' has no option 'pooling'; its options are: ")
    assert option_problems("lenet5", {"dropout_rate": 1.0}) == ["model.dropout_rate must be in [0, 1), got 1.0"]
    assert option_problems("nope", {"dropout_rate": -0.1}) == [
        f"model.name='nope' is not a model; valid choices: {', '.join(list_models())}",
        "model.dropout_rate must be in [0, 1), got -0.1",
    ]


def _abstract_apply(model, shape, train):
    x = jnp.zeros((2, *shape))
    variables = jax.eval_shape(lambda: model.init(RNGS, x, train=False))
    return jax.eval_shape(
        lambda v: model.apply(v, x, train=train, mutable=["batch_stats"], rngs=RNGS)[0],
        variables,
    )


def test_googlenet_aux_outputs_only_in_training():
    model = get_model("googlenet", 7, aux_logits=True)
    train_out = _abstract_apply(model, (64, 64, 3), train=True)
    assert isinstance(train_out, tuple) and len(train_out) == 3
    assert all(o.shape == (2, 7) for o in train_out)
    assert _abstract_apply(model, (64, 64, 3), train=False).shape == (2, 7)
    plain = get_model("googlenet", 7)
    assert _abstract_apply(plain, (64, 64, 3), train=True).shape == (2, 7)


def test_googlenet_loss_weights_aux_heads():
    labels = np.array([0, 1])
    main, aux1, aux2 = (np.array([[2.0, 0.0], [0.0, 1.0]]) * s for s in (1.0, 0.5, -1.0))

    def ce(logits):
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        return float(-np.mean(log_probs[np.arange(2), labels]))

    expected = ce(main) + googlenet.AUX_LOSS_WEIGHT * (ce(aux1) + ce(aux2))
    assert googlenet.AUX_LOSS_WEIGHT == 0.3
    assert float(googlenet.googlenet_loss((main, aux1, aux2), labels)) == pytest.approx(expected)
    assert float(googlenet.googlenet_loss(main, labels)) == pytest.approx(ce(main))


def test_mlp_sows_every_hidden_activation():
    model = get_model("mlp", 3, depth=4, width=8, activation="tanh")
    x = jnp.ones((5, 2, 3))

    @jax.jit
    def run(x):
        variables = model.init(RNGS, x, train=False)
        return model.apply(variables, x, train=False, mutable=["intermediates"])

    logits, state = run(x)
    assert logits.shape == (5, 3)
    layers = state["intermediates"]
    assert sorted(layers) == [f"layer{i}" for i in range(4)]
    assert all(np.all(np.abs(layers[k][0]) <= 1.0) for k in layers)  # tanh range


def test_lenet5_original_rbf_prototypes_are_fixed_constants():
    model = get_model("lenet5_original", 10)
    x = jnp.zeros((3, 32, 32, 1))
    variables = jax.eval_shape(lambda: model.init(RNGS, x, train=False))
    # Nothing but trainable parameters: the prototypes are constants.
    assert set(variables) == {"params"}
    assert sorted(variables["params"]) == ["C1", "C3", "C5", "F6", "S2", "S4"]
    # C3's Table I: 60 connections of 5x5 kernels plus 16 biases.
    assert sum(leaf.size for leaf in jax.tree.leaves(variables["params"]["C3"])) == 1516
    prototypes = lenet_original.rbf_prototypes(10)
    assert prototypes.shape == (10, 84) and set(np.unique(prototypes)) == {-1.0, 1.0}
    assert len({row.tobytes() for row in prototypes}) == 10, "one distinct prototype per class"
    # The logits are minus the squared distances from F6's output to these prototypes.
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 32, 32, 1))
    params = model.init(RNGS, x, train=False)
    logits, state = model.apply(params, x, train=False, capture_intermediates=True)
    f6 = lenet_original.scaled_tanh(state["intermediates"]["F6"]["__call__"][0])
    expected = -np.sum((np.asarray(f6)[:, None, :] - prototypes[None]) ** 2, axis=-1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-4)
    assert sum(len(c) for c in lenet_original.C3_CONNECTIONS) == 60
