"""In-step monitors: per-layer statistics computed inside the jitted train step.

`LayerMonitor` is the `monitor` argument of `cnnjax.training.steps.train_step`.
It returns scalar metrics named `monitor/<quantity>/<layer>`:

- `update_ratio` = ||update|| / ||param|| and `grad_norm`, per conv/dense kernel
  (layer = the kernel's path without `/kernel`). A kernel stacked by `nn.scan`
  (the CIFAR ResNets' repeated blocks) is one leaf with a leading block axis; it
  is reported as one layer over all its blocks.
- `act_mean`, `act_std`, and `dead_fraction` (ReLU) or `saturated_fraction`
  (tanh, sigmoid), per hidden layer.

Which values count as a layer's activations: models that `sow` their hidden
activations into 'intermediates' (e.g. `mlp`) are measured on those. Otherwise
the outputs of conv/dense layers (or of the BatchNorm layers, when the model has
any, since those feed the nonlinearity) are captured with Linen's
`capture_intermediates` and passed through the model's activation function; the
output layer (the logits) is left out. Layers inside `nn.scan` are not captured
by Linen, so their activations are not reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnnjax.models import layers

_EPS = 1e-12
SATURATING = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}


def capture_layers(module: nn.Module, method_name: str) -> bool:
    """Linen capture filter: outputs of weight layers (own a `kernel`) and BatchNorm layers.

    Decided by the variables a module owns rather than its class, so custom
    conv/dense modules of the zoo are captured too.
    """
    if method_name != "__call__":
        return False
    if isinstance(module, (nn.Conv, nn.Dense, nn.BatchNorm)):
        return True
    return module.has_variable("params", "kernel") or module.has_variable("batch_stats", "mean")


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def kernel_leaves(tree: Any) -> list[tuple[str, jax.Array]]:
    """(layer name, leaf) for every conv/dense kernel, in tree order."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = _path_name(path)
        if name.endswith("kernel") and jnp.ndim(leaf) > 1:
            found.append((name[: -len("/kernel")] or "kernel", leaf))
    return found


def _walk(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Entries of a raw intermediates dict in insertion (= execution) order."""
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            yield from _walk(value, name)
        else:
            yield name, value


def _params_at(params: Any, path: str) -> Any:
    node = params
    for part in path.split("/"):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def hidden_activations(
    intermediates: Any, params: Any, logits: jax.Array, activation: str
) -> list[tuple[str, jax.Array]]:
    """(layer name, post-activation values) of each hidden layer, in execution order.

    See the module docstring for which values are chosen.
    """
    sown, weights, norms = [], [], []
    for name, values in _walk(intermediates):
        value = values[-1] if isinstance(values, tuple) else values
        if name.endswith("/__call__"):
            layer = name[: -len("/__call__")]
            node = _params_at(params, layer)
            if value is logits or node is None:
                continue
            (weights if "kernel" in node else norms).append((layer, value))
        else:
            sown.append((name, value))
    if sown:
        return sown
    pre = norms if norms else weights
    if pre and not norms and pre[-1][1].shape == logits.shape:
        pre = pre[:-1]  # the output layer when identity did not match it
    act = layers.get_activation(activation)
    return [(name, act(value)) for name, value in pre]


def activation_stats(values: jax.Array, activation: str) -> dict[str, jax.Array]:
    """Mean, std, and the dead (ReLU) or saturated (tanh/sigmoid) fraction of a layer."""
    values = values.astype(jnp.float32)
    stats = {"act_mean": jnp.mean(values), "act_std": jnp.std(values)}
    if activation == "relu":
        # A unit (last axis) is dead when it is 0 for every example and position of the batch.
        active = jnp.max(values.reshape(-1, values.shape[-1]), axis=0) > 0
        stats["dead_fraction"] = jnp.mean((~active).astype(jnp.float32))
    elif activation in SATURATING:
        low, high = SATURATING[activation]
        # Within 0.01 of a bound: tanh' < 0.02 there, sigmoid' < 0.01, so gradients all but vanish.
        near = (values < low + 0.01) | (values > high - 0.01)
        stats["saturated_fraction"] = jnp.mean(near.astype(jnp.float32))
    return stats


@dataclasses.dataclass(frozen=True)
class LayerMonitor:
    """The in-step monitor (a `cnnjax.training.steps.StepMonitor`).

    Attributes:
      activation: the model's nonlinearity (decides dead vs saturated units and
        is applied to captured pre-activation outputs).
    """

    activation: str = "relu"
    capture: Any = capture_layers

    def __call__(self, *, params, grads, updates, intermediates, logits) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        grad_kernels = dict(kernel_leaves(grads))
        update_kernels = dict(kernel_leaves(updates))
        for layer, kernel in kernel_leaves(params):
            param_norm = jnp.sqrt(jnp.sum(jnp.square(kernel.astype(jnp.float32))))
            update_norm = jnp.sqrt(jnp.sum(jnp.square(update_kernels[layer].astype(jnp.float32))))
            out[f"monitor/update_ratio/{layer}"] = update_norm / (param_norm + _EPS)
            out[f"monitor/grad_norm/{layer}"] = jnp.sqrt(jnp.sum(jnp.square(grad_kernels[layer])))
        for layer, values in hidden_activations(intermediates, params, logits, self.activation):
            for key, value in activation_stats(values, self.activation).items():
                out[f"monitor/{key}/{layer}"] = value
        return out


def model_activation(model: nn.Module) -> str:
    """The activation a model uses (its `activation` field; ReLU when it has none)."""
    return str(getattr(model, "activation", "relu") or "relu")


def make_snapshot_fn(monitor: LayerMonitor):
    """Jitted `snapshot(state, images, rng) -> {layer: activations}` for histograms.

    Runs the model in training mode (BatchNorm on batch statistics, as the step
    sees it) without changing the state.
    """

    def snapshot(state, images, rng):
        out, updated = state.apply_fn(
            state.variables, images, train=True, rngs={"dropout": rng},
            mutable=["batch_stats", "intermediates"], capture_intermediates=monitor.capture,
            model_hparams=state.model_hparams,
        )
        logits = out[0] if isinstance(out, tuple) else out
        return dict(hidden_activations(updated.get("intermediates", {}), state.params, logits, monitor.activation))

    return jax.jit(snapshot)


def histograms(activations: dict[str, Any], bins: int = 40) -> dict[str, dict[str, list[float]]]:
    """Per-layer histogram (counts as fractions, bin edges) of host activations."""
    out = {}
    for layer, values in activations.items():
        flat = np.asarray(values, np.float64).ravel()
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            continue
        low, high = float(flat.min()), float(flat.max())
        if high - low < 1e-12:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(flat, bins=bins, range=(low, high))
        out[layer] = {
            "fractions": (counts / flat.size).tolist(),
            "edges": edges.tolist(),
            "mean": float(flat.mean()),
            "std": float(flat.std()),
        }
    return out
