"""Pre-flight checks (cs231n lecture 5, "babysitting the learning process").

Each check runs the real `train_step` (or the one in `CheckContext.step_fn`, so
tests can break it on purpose) on a small batch and returns a `CheckResult`:
pass/fail, the measured figure, the expected one, and what to do. The
learning-rate range test lives in `cnnjax.diagnostics.lr_range`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.data.splits import stratified_subset
from cnnjax.diagnostics.monitors import kernel_leaves
from cnnjax.diagnostics.settings import CheckSettings
from cnnjax.training.feeds import member_keys
from cnnjax.training.optim import make_optimizer, optimizer_from_config
from cnnjax.training.state import TrainState, create_train_state
from cnnjax.training.steps import train_step

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclasses.dataclass
class CheckResult:
    """The outcome of one check."""

    name: str
    status: str  # PASS, FAIL or SKIPPED
    measured: str
    expected: str
    advice: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CheckContext:
    """What every check needs: the config, its data, its model, and the step to test."""

    config: ml_collections.ConfigDict
    dataset: Any  # cnnjax.data.Dataset
    model: Any  # flax.linen.Module
    settings: CheckSettings
    step_fn: Callable = train_step

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def batch(self, count: int) -> dict[str, jax.Array]:
        """`count` training examples in class proportion, normalised, not augmented.

        Stratified, because a split may be stored sorted by class (mnist5k is).
        """
        split = self.dataset.train
        rows = stratified_subset(split.labels, min(count, split.num_examples))
        images = pipeline.normalize(jnp.asarray(split.images[rows]), jnp.asarray(self.dataset.mean),
                                    jnp.asarray(self.dataset.std))
        return {"image": images, "label": jnp.asarray(split.labels[rows])}

    def state(self, *, l2: float = 0.0, sgd_learning_rate: float | None = None, model: Any = None) -> TrainState:
        """A fresh state of the config's model at its init seed, regularisation off.

        The optimiser is the config's own chain (its schedule and warmup
        included, as the run would use them) without weight decay; with
        `sgd_learning_rate` it is plain SGD at that constant rate instead.
        `l2` turns the L2 penalty on; label smoothing stays off.
        """
        if sgd_learning_rate is not None:
            tx = make_optimizer("sgd", sgd_learning_rate)
        else:
            plain = self.config.copy_and_resolve_references()
            with plain.unlocked():
                plain.optimizer.weight_decay = 0.0
            steps_per_epoch = max(1, self.dataset.train.num_examples // self.config.batch_size)
            tx = optimizer_from_config(plain, steps_per_epoch, steps_per_epoch * self.config.num_epochs)
        init_key, _ = member_keys(self.config.seed)
        return create_train_state(model or self.model, tx, init_key, self.dataset.image_shape, l2=l2)


def _timed(fn: Callable[[CheckContext], CheckResult]) -> Callable[[CheckContext], CheckResult]:
    def run(ctx: CheckContext) -> CheckResult:
        start = time.time()
        result = fn(ctx)
        result.seconds = time.time() - start
        return result

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


@_timed
def check_initial_loss(ctx: CheckContext) -> CheckResult:
    """With regularisation off, the loss at init is about ln(C) for C classes."""
    tolerance = ctx.settings.init_loss_tolerance
    _, metrics = jax.jit(ctx.step_fn)(ctx.state(), ctx.batch(ctx.settings.examples))
    loss = float(metrics["data_loss"])
    expected = math.log(ctx.num_classes)
    ok = math.isfinite(loss) and abs(loss - expected) <= tolerance * expected
    advice = ("The network starts out predicting every class about equally, as it should." if ok else
              "The init is badly scaled (the output layer's logits are far from 0), the labels are wrong "
              "(e.g. not 0..C-1) or the softmax/cross-entropy is buggy. Check model.kernel_init / "
              "model.init_scale and the label range before training.")
    return CheckResult(
        "initial loss", PASS if ok else FAIL, f"loss {loss:.4f} at init",
        f"ln({ctx.num_classes}) = {expected:.4f} +/- {tolerance * expected:.3f}", advice,
        {"loss": loss, "expected": expected, "tolerance": tolerance * expected},
    )


def regularization_strength(config: ml_collections.ConfigDict, settings: CheckSettings) -> tuple[float, str]:
    """The L2 strength the regularisation check turns on, and where it came from."""
    if config.loss.l2 > 0:
        return float(config.loss.l2), "loss.l2"
    if config.optimizer.weight_decay > 0:
        return float(config.optimizer.weight_decay), "optimizer.weight_decay (as the equivalent L2 penalty)"
    return settings.reg_strength, "babysit.reg_strength (the config has no L2 / weight decay)"


@_timed
def check_regularization(ctx: CheckContext) -> CheckResult:
    """Turning L2 on raises the initial loss by exactly the penalty."""
    strength, source = regularization_strength(ctx.config, ctx.settings)
    batch = ctx.batch(ctx.settings.examples)
    step = jax.jit(ctx.step_fn)
    without = ctx.state()
    _, off = step(without, batch)
    _, on = step(ctx.state(l2=strength), batch)
    increase = float(on["loss"]) - float(off["loss"])
    squares = sum(float(np.sum(np.square(np.asarray(k, np.float64)))) for _, k in kernel_leaves(without.params))
    penalty = 0.5 * strength * squares
    ok = increase > 0 and abs(increase - penalty) <= 1e-3 * penalty + 1e-6
    advice = ("The penalty reaches the loss." if ok else
              "The L2 penalty does not reach the loss as it should: check that the regularisation term is "
              "added to the loss and applied to the kernels (not zero-initialised kernels).")
    return CheckResult(
        "regularisation raises the loss", PASS if ok else FAIL,
        f"loss {float(off['loss']):.4f} -> {float(on['loss']):.4f} (+{increase:.4g}) with L2 {strength:g} ({source})",
        f"an increase of 0.5 * {strength:g} * sum(w^2) = {penalty:.4g}", advice,
        {"loss_without": float(off["loss"]), "loss_with": float(on["loss"]), "increase": increase,
         "expected_increase": penalty, "strength": strength},
    )


def _without_dropout(model):
    return model.clone(dropout_rate=0.0) if hasattr(model, "dropout_rate") else model


@_timed
def check_overfit(ctx: CheckContext) -> CheckResult:
    """~20 examples, no regularisation: 100% train accuracy within the step budget."""
    settings = ctx.settings
    batch = ctx.batch(settings.overfit_examples)
    count = int(batch["label"].shape[0])
    state = ctx.state(model=_without_dropout(ctx.model))
    step = jax.jit(ctx.step_fn)
    losses, reached = [], None
    for index in range(settings.overfit_steps):
        state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        losses.append(float(metrics["loss"]))
        # The step's accuracy is measured before its update, on the whole subset.
        if float(metrics["accuracy"]) >= 1.0:
            reached = index
            break
    _, final = step(state, batch)
    accuracy = float(final["accuracy"]) if reached is None else 1.0
    ok = reached is not None
    lr = ctx.config.optimizer.learning_rate
    measured = (f"100% train accuracy after {reached} steps (loss {losses[0]:.3f} -> {losses[-1]:.3g})" if ok else
                f"{accuracy:.0%} train accuracy after {settings.overfit_steps} steps "
                f"(loss {losses[0]:.3f} -> {float(final['loss']):.3g})")
    advice = ("The model can fit the data: backward pass, labels and learning rate work together." if ok else
              "The backward pass, the data or the learning rate is broken: a model this size should memorise "
              f"{count} examples. Check the gradient (sign, scale), that labels match images, and try a "
              f"learning rate 10x away from {lr:g}.")
    return CheckResult(
        "overfit a tiny subset", PASS if ok else FAIL, measured,
        f"100% train accuracy on {count} examples within {settings.overfit_steps} steps, no regularisation",
        advice, {"steps_to_100": reached, "losses": losses, "final_accuracy": accuracy, "examples": count},
    )


def _output_layer(params) -> str | None:
    """The last kernel in execution order: its units are the classes, not symmetric by design."""
    names = [name for name, _ in kernel_leaves(params)]
    order = list(_insertion_order(params))
    ordered = [n for n in order if n in names]
    return ordered[-1] if ordered else None


def _insertion_order(tree, prefix: str = ""):
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if hasattr(value, "items"):
            if "kernel" in value and not hasattr(value["kernel"], "items"):
                yield name
            yield from _insertion_order(value, name)


@_timed
def check_symmetry(ctx: CheckContext) -> CheckResult:
    """Units of a layer must get different gradients at init, or they never differ."""
    tolerance = ctx.settings.symmetry_tolerance
    # SGD with learning rate 1 makes the step's update exactly -gradient.
    state = ctx.state(sgd_learning_rate=1.0, model=_without_dropout(ctx.model))
    new_state, _ = jax.jit(ctx.step_fn)(state, ctx.batch(ctx.settings.examples))
    grads = jax.tree_util.tree_map(lambda old, new: np.asarray(old) - np.asarray(new), state.params, new_state.params)
    output = _output_layer(state.params)
    symmetric, checked = [], []
    for layer, grad in kernel_leaves(grads):
        if layer == output or grad.shape[-1] < 2:
            continue
        columns = np.asarray(grad, np.float64).reshape(-1, grad.shape[-1])
        scale = float(np.max(np.abs(columns)))
        spread = float(np.max(np.abs(columns - columns[:, :1])))
        checked.append(layer)
        if spread <= tolerance * scale or scale == 0.0:
            symmetric.append(layer)
    init = ctx.config.model.get("kernel_init") or getattr(ctx.model, "kernel_init", "the model's default")
    ok = not symmetric
    measured = (f"{len(symmetric)} of {len(checked)} hidden layers have identical unit gradients: "
                f"{', '.join(symmetric)}" if symmetric else
                f"all {len(checked)} hidden layers have distinct unit gradients (init: {init})")
    advice = ("Random init breaks the symmetry." if ok else
              f"The init ({init}) is constant: every unit of a layer computes the same thing and gets the same "
              "gradient, so they stay copies forever. Use a random init (model.kernel_init=he_normal or "
              "xavier_normal). Training is refused unless --config.babysit.force=True.")
    return CheckResult(
        "zero-init symmetry", PASS if ok else FAIL, measured,
        "units of every hidden layer get different gradients", advice,
        {"symmetric_layers": symmetric, "checked_layers": checked, "kernel_init": str(init)},
    )


CHECKS: tuple[Callable[[CheckContext], CheckResult], ...] = (
    check_initial_loss, check_regularization, check_overfit,
)
