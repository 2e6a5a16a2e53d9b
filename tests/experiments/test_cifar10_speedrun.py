"""CIFAR-10 speed run: whitening, frozen parameters, the airbench94 count, and a smoke run's outputs."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnjax.models import airbench, get_model
from experiments import cifar10_speedrun, common
from experiments.speedrun import data as speedrun_data
from experiments.speedrun import optim

needs_archive = pytest.mark.needs_cifar10
# The tests check behaviour, not speed: compile with XLA's cheap settings.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _correlated_images(count=64, size=12, seed=0):
    """Images whose neighbouring pixels and channels are correlated (so whitening has work to do)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(count, size + 1, size + 1, 3))
    smooth = noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1]  # spatial correlation
    mixing = np.array([[1.0, 0.6, 0.3], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return jnp.asarray(smooth @ mixing + 0.5, jnp.float32)


@jax.jit
def _whiten_output(images, kernel):
    """The whitening layer's output (before GELU) inside the full model."""
    model = get_model("airbench94", 10, widths=(4, 4, 4))
    variables = model.init(jax.random.PRNGKey(0), images[:1], train=False)
    params = airbench.set_whitening(variables["params"], kernel)
    _, state = model.apply({**variables, "params": params}, images, train=False, capture_intermediates=True,
                           mutable=["intermediates"])
    return state["intermediates"]["whiten"]["__call__"][0]


def test_whitening_layer_whitens_the_patches_it_was_fitted_to():
    images = _correlated_images()
    covariance = np.asarray(airbench.patch_covariance(images, 2))
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() > 0.5  # correlated before

    out = np.asarray(_whiten_output(images, airbench.whitening_kernel(images, 2, eps=0.0)))
    assert out.shape == (64, 11, 11, 24)
    first = out[..., :12].reshape(-1, 12)
    np.testing.assert_allclose(first.T @ first / len(first), np.eye(12), atol=2e-3)
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-6)  # the negated copy

    # With eps (the recipe's 5e-4): still decorrelated, component i scaled to lambda_i / (lambda_i + eps).
    eps = 0.05
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))[::-1]
    first = np.asarray(_whiten_output(images, airbench.whitening_kernel(images, 2, eps=eps)))[..., :12].reshape(-1, 12)
    np.testing.assert_allclose(first.T @ first / len(first), np.diag(eigenvalues / (eigenvalues + eps)), atol=2e-3)


def test_param_count_is_the_reference_airbench94():
    model = get_model("airbench94", 10)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
    params = variables["params"]
    total = sum(leaf.size for leaf in jax.tree.leaves(params))
    # Whitening 24x3x2x2 + 24; groups (24->64, 64->256, 256->256) of two 3x3 convs + BN weight and bias; head 256x10.
    assert total == airbench.reference_param_count() == 1_972_792
    labels = airbench.param_labels(params)
    assert jax.tree.structure(labels) == jax.tree.structure(params)
    frozen = sum(p.size for p, lab in zip(jax.tree.leaves(params), jax.tree.leaves(labels)) if lab == airbench.FROZEN)
    assert frozen == 288 + 2 * (64 + 256 + 256)  # whitening kernel + the BN scales the reference keeps at 1
    assert params["whiten"]["kernel"].shape == (2, 2, 3, 24)


def test_optimizer_leaves_frozen_parameters_and_stops_the_whitening_bias():
    config = cifar10_speedrun.get_config("smoke")
    model = get_model("airbench94", 10, widths=(4, 4, 4))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), shapes["params"])
    tx = optim.make_optimizer(config, steps_per_epoch=2, total_steps=6)  # bias frozen after 1 epoch
    labels = airbench.param_labels(params)
    assert jax.tree.structure(labels) == jax.tree.structure(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for index in range(4):
        new, state = step(params, state)
        for old_leaf, new_leaf, label in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(labels)):
            moved = bool(np.any(np.asarray(old_leaf) != np.asarray(new_leaf)))
            if label == airbench.FROZEN:
                assert not moved
            elif label == airbench.WHITEN_BIAS:
                assert moved == (index < 2), index
            else:
                assert moved
        params = new


def test_learning_rate_shape():
    factor = optim.lr_factor
    values = [float(factor(s, 100, 0.23, 0.2, 0.07)) for s in (0, 23, 100)]
    np.testing.assert_allclose(values, [0.2, 1.0, 0.07], rtol=1e-6)


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="full, cpu_budget, smoke"):
        cifar10_speedrun.get_config("huge")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("speedrun"))
    config = cifar10_speedrun.get_config("smoke")
    config.target_accuracy = 0.0  # reached at the first evaluation: exercises the time-to-target bookkeeping
    result = cifar10_speedrun.run(config, workdir, compiler_options=FAST_COMPILE, log=lambda _: None)
    return workdir, config, result


@needs_archive
def test_smoke_run_writes_table_summary_and_plot(smoke):
    workdir, config, result = smoke
    for name in ("table.csv", "table.md", "summary.json", "config.json", "val_accuracy_vs_time.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert [r["epoch"] for r in rows] == ["1", "2", "final"]
    clocks = [float(r["clock_s"]) for r in rows]
    assert clocks == sorted(clocks) and clocks[0] > 0
    assert rows[-1]["tta_level"] == "2"
    assert [int(r["steps"]) for r in rows] == [4, 7, 7]  # 1.75 epochs of 4 steps: the last epoch stops at 7
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["train_examples"] == 256 and summary["val_examples"] == 100
    record = summary["runs"][0]
    # Each accuracy counts correct predictions among the validation images, and the table's last is the run's.
    assert all(_is_count_over(float(r["val_accuracy"]), summary["val_examples"]) for r in rows)
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(record["final_accuracy"], abs=1e-6)
    assert record["time_to_target_s"] == pytest.approx(clocks[0])
    assert record["time_to_target_with_compile_s"] == pytest.approx(clocks[0] + summary["compile_s"])
    assert set(summary["compile_breakdown_s"]) == {"init", "fit_whitening", "train_epoch", "epoch_eval", "final_eval"}


@needs_archive
def test_training_keeps_the_fitted_whitening_and_bn_scales(smoke):
    _, config, result = smoke
    params = result["state"]["params"]
    fitted = result["fitted_whitening"]
    np.testing.assert_array_equal(np.asarray(params["whiten"]["kernel"]), fitted)
    # ... and the fitted kernel is the one `whitening_kernel` computes from those training images.
    data = speedrun_data.load_data(config)
    images = (data.train_images[: config.whiten.examples] / 255.0 - data.mean) / data.std
    expected = airbench.whitening_kernel(jnp.asarray(images, jnp.float32), 2, config.whiten.eps)
    np.testing.assert_allclose(fitted, np.asarray(expected), rtol=0.02, atol=0.02)
    for group in ("group1", "group2", "group3"):
        for norm in ("norm1", "norm2"):
            assert np.all(np.asarray(params[group][norm]["scale"]) == 1.0)
    assert np.any(np.asarray(params["whiten"]["bias"]) != 0.0)  # trained during the first epoch


_NO_TENSORFLOW = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
from experiments import cifar10_speedrun
from experiments.speedrun import data as speedrun_data, programs
config = cifar10_speedrun.get_config("smoke")
config.data.max_train_examples, config.data.max_eval_examples, config.batch_size = 20, 10, 10
data = speedrun_data.load_data(config)
programs.build(config, len(data.train_labels), data.num_classes, data.mean, data.std)
print(data.train_images.shape, data.val_images.shape)
"""


@needs_archive
def test_data_and_programs_need_no_tensorflow():
    """Accelerator machines may lack TensorFlow: the speed run reads the JPEGs with PIL."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(20, 32, 32, 3) (10, 32, 32, 3)" in done.stdout


def _is_count_over(accuracy: float, examples: int) -> bool:
    """An accuracy measured on `examples` images is a whole number of them (a mean of batch means is not)."""
    return abs(accuracy * examples - round(accuracy * examples)) < 1e-4 * examples
