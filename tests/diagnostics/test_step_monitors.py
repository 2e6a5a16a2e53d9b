"""The in-step monitor: off is the plain step, on adds per-layer metrics, and a population can vmap it."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.data import Split
from cnnjax.data.splits import stratified_subset
from cnnjax.diagnostics.babysit import monitored_run
from cnnjax.diagnostics.monitors import LayerMonitor
from cnnjax.models import get_model
from cnnjax.training import optim
from cnnjax.training.state import create_train_state
from cnnjax.training.steps import train_step


def _state(lr=0.05):
    model = get_model("lenet5", 10)
    return create_train_state(model, optim.make_optimizer("momentum", lr), jax.random.PRNGKey(0), (28, 28, 1))


def _batch():
    return {"image": jax.random.normal(jax.random.PRNGKey(1), (16, 28, 28, 1)), "label": jnp.arange(16) % 10}


def test_monitor_off_is_the_plain_step_and_on_adds_per_layer_metrics(assert_trees_equal):
    state, batch = _state(), _batch()
    plain_state, plain = jax.jit(train_step)(state, batch)  # monitor=None: the plain program
    on_state, on = jax.jit(train_step, static_argnames="monitor")(state, batch, monitor=LayerMonitor())
    assert set(plain) < set(on)
    assert_trees_equal(on_state, plain_state, rtol=1e-5, atol=1e-6)  # monitoring never changes training
    layers = ["Conv_0", "Conv_1", "Dense_0", "Dense_1", "Dense_2"]
    for layer in layers:
        param = state.params[layer]["kernel"]
        update = on_state.params[layer]["kernel"] - param
        np.testing.assert_allclose(on[f"monitor/update_ratio/{layer}"],
                                   np.linalg.norm(update) / np.linalg.norm(param), rtol=1e-4)
    # Hidden layers only: the logits (Dense_2) are not an activation.
    assert sorted(k.split("/", 2)[2] for k in on if k.startswith("monitor/act_std/")) == layers[:-1]
    # A layer whose bias pushes every pre-activation below zero is all dead; at init it is not.
    params = {name: dict(layer_params) for name, layer_params in state.params.items()}
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"] - 1e4
    _, dead = jax.jit(train_step, static_argnames="monitor")(state.replace(params=params), batch,
                                                              monitor=LayerMonitor())
    assert float(dead["monitor/dead_fraction/Dense_0"]) == 1.0
    assert float(on["monitor/dead_fraction/Dense_0"]) < 0.5
    assert float(dead["monitor/dead_fraction/Conv_0"]) == float(on["monitor/dead_fraction/Conv_0"])


def test_a_population_vmaps_the_monitored_step_unchanged():
    state = _state()
    # Members share apply_fn and tx (static) and differ in the traced learning rate.
    states = [state.replace(opt_state=optim.set_hyperparams(state.opt_state, {"learning_rate": lr}))
              for lr in (0.01, 0.1)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)
    step = jax.jit(jax.vmap(lambda s, b: train_step(s, b, monitor=LayerMonitor()), in_axes=(0, None)))
    _, metrics = step(stacked, _batch())
    ratios = metrics["monitor/update_ratio/Conv_0"]
    assert ratios.shape == (2,) and float(ratios[1]) > 5 * float(ratios[0])  # per-member learning rates


def test_monitored_run_logs_monitors_verdicts_and_a_report(default_config, mnist5k, tmp_path):
    config = default_config
    config.num_epochs = 1
    config.log_every_steps = 2
    config.monitor.every = 2
    config.monitor.histogram_examples = 64
    config.model.name = "mlp"
    config.model.activation = "tanh"
    config.model.kernel_init = "normal"
    config.model.init_scale = 0.01
    rows = stratified_subset(mnist5k.train.labels, 512)
    dataset = dataclasses.replace(mnist5k, train=Split(mnist5k.train.images[rows], mnist5k.train.labels[rows]))
    result = monitored_run(config, str(tmp_path), dataset=dataset, echo=False)
    assert result["training"]["status"] == "completed"
    assert "activations_collapsing" in {v["key"] for v in result["verdicts"]}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert any("activations collapsing" in line for line in summary["verdicts"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    monitored = [r for r in records if "monitor/act_std/layer0" in r]
    assert [r["step"] for r in monitored][:3] == [1, 3, 5]
    assert summary["monitor/train_val_gap"] == summary["train/accuracy"] - summary["val/accuracy"]
    for name in ("report.html", "report.md", "babysit.json", "loss.png", "accuracy.png", "update_ratio.png",
                 "activation_histograms.png"):
        assert (tmp_path / name).exists(), name
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "activations collapsing" in html
