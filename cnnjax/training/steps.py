"""The train and eval steps: pure functions of (state, batch).

`train_step` is the library's only training step: single runs jit it, populations
vmap it. It never reads config or globals. (The CIFAR-10 speed-run experiment keeps
its own step, for what this one lacks: see `experiments/speedrun/programs.py`.)
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import optax

from cnnjax.training.optim import find_hyperparams, kernel_mask
from cnnjax.training.state import TrainState, update_ema

# Weight of each auxiliary classifier's loss for models that return
# (logits, *aux_logits) in training, as in GoogLeNet (Szegedy et al. 2015).
AUX_LOSS_WEIGHT = 0.3


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: jax.Array | float = 0.0):
    """Mean softmax cross-entropy with optional label smoothing (traceable)."""
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def regularization(params, l2: jax.Array, l1: jax.Array) -> jax.Array:
    """`l2/2 * sum(w^2) + l1 * sum(|w|)` over conv/dense kernels."""
    mask = kernel_mask(params)
    kernels = [p for p, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if m]
    sq = sum(jnp.sum(jnp.square(k)) for k in kernels)
    ab = sum(jnp.sum(jnp.abs(k)) for k in kernels)
    return 0.5 * l2 * sq + l1 * ab


def _global_norm(tree) -> jax.Array:
    return optax.global_norm(tree)


class StepMonitor(Protocol):
    """Extra in-step measurements (see `cnnjax.diagnostics`), passed as a static argument.

    `capture` is Linen's `capture_intermediates` argument (True or a filter
    `(module, method_name) -> bool`); calling the monitor returns scalar metrics.
    Implementations must be hashable (a frozen dataclass), as jit keys on them.
    """

    capture: bool | Callable[[Any, str], bool]

    def __call__(self, *, params, grads, updates, intermediates, logits) -> dict[str, jax.Array]: ...


def independent_pieces(shards: int, state: TrainState, batch_size: int, monitor) -> int:
    """How many pieces `train_step` splits the batch into: `shards` where they are independent, else 1.

    Pieces are independent for a model without batch statistics (BatchNorm
    normalises over the whole batch in training), without a monitor (whose
    intermediates are per batch), and for a batch of at least 16 rows per piece.
    """
    if shards <= 1 or monitor is not None or jax.tree_util.tree_leaves(state.batch_stats):
        return 1
    return shards if batch_size % shards == 0 and batch_size // shards >= 16 else 1


def train_step(
    state: TrainState, batch: dict[str, jax.Array], *, monitor: StepMonitor | None = None, shards: int = 1
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimisation step on `batch` ({'image': NHWC float, 'label': int}).

    A step whose loss or gradients are not finite leaves the state unchanged
    (metric `finite` = 0), so the caller can stop with the last good state.
    `monitor` (static: jit with `static_argnames='monitor'`) adds its metrics;
    with the default None the traced program is the plain step.

    `shards` > 1 runs the forward and backward passes as that many pieces of
    the batch, each its own chain of operations, where `independent_pieces`
    allows (else one): the logits, loss and gradients are the whole batch's,
    up to the order of float sums (each piece draws its own dropout masks).
    XLA:CPU runs one chain's small operations one after another, mostly on
    one core; two chains keep both cores of a 2-core host busy (LeNet-5, batch
    128: about 0.9x the step time, see `cnnjax.training.feeds.cpu_step_shards`).
    """
    rng, dropout_rng = jax.random.split(state.rng)
    hp = state.loss_hparams
    # Intermediates are collected only when a monitor asks, so the plain step stays as cheap as before.
    capture = {} if monitor is None else {"capture_intermediates": monitor.capture}
    collections = ["batch_stats"] if monitor is None else ["batch_stats", "intermediates"]

    pieces = independent_pieces(shards, state, batch["image"].shape[0], monitor)

    def forward(params, images, key):
        return state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            rngs={"dropout": key},
            mutable=collections,
            model_hparams=state.model_hparams,
            **capture,
        )

    def loss_fn(params):
        if pieces == 1:
            out, updated = forward(params, batch["image"], dropout_rng)
        else:
            outs = [forward(params, images, jax.random.fold_in(dropout_rng, k))
                    for k, images in enumerate(jnp.split(batch["image"], pieces))]
            # No batch statistics and no intermediates: every piece's `updated` is the same empty dict.
            out = jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *[o for o, _ in outs])
            updated = outs[0][1]
        logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        data_loss = cross_entropy(logits, batch["label"], hp["label_smoothing"])
        aux_loss = sum(cross_entropy(a, batch["label"], hp["label_smoothing"]) for a in aux)
        reg = regularization(params, hp["l2"], hp["l1"])
        loss = data_loss + AUX_LOSS_WEIGHT * aux_loss + reg
        return loss, (logits, updated.get("batch_stats", {}), data_loss, updated.get("intermediates", {}))

    (loss, (logits, batch_stats, data_loss, intermediates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = _global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # A population passes `active` (False for a member already frozen), so one
    # select freezes both a diverged member and a non-finite step.
    keep = finite & batch["active"] if "active" in batch else finite

    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        rng=rng,
        ema=update_ema(state.ema, params, batch_stats),
    )
    # Freeze on a non-finite step: keep every leaf of the old state.
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), new_state, state)
    hyper = find_hyperparams(opt_state)
    metrics = {
        "loss": loss,
        "data_loss": data_loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "grad_norm": grad_norm,
        "param_norm": _global_norm(params),
        "update_norm": _global_norm(updates),
        "learning_rate": hyper["learning_rate"] * hyper.get("lr_scale", 1.0),
        "finite": keep.astype(jnp.float32),
    }
    if monitor is not None:
        metrics.update(
            monitor(params=state.params, grads=grads, updates=updates, intermediates=intermediates, logits=logits)
        )
    return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Summed loss / correct count over the valid rows of `batch` (BN in eval mode).

    `batch['mask']` (1 for real rows, 0 for padding) lets the last batch be padded.
    With EMA on, the averaged weights are evaluated.
    """
    out = state.apply_fn(state.eval_variables, batch["image"], train=False)
    logits = out[0] if isinstance(out, tuple) else out
    mask = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(losses * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }
