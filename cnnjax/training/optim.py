"""The optax chain built from config: clip -> optimiser -> weight decay -> lr schedule.

Every numeric hyperparameter (peak learning rate, momentum / betas, weight decay,
...) is created through `optax.inject_hyperparams`, so it is a traced array in the
optimiser state rather than a Python constant baked into the compiled program. A
population can therefore carry one value per member without recompiling.

The learning rate at step t is `learning_rate * lr_scale(t)`, where `lr_scale` is
the schedule's shape (warmup, decay) normalised to a peak of 1. Both factors are
stored in `opt_state.hyperparams`, so the peak stays a per-member number.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

OPTIMIZER_CHOICES = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "adadelta",
    "rmsprop",
    "adam",
    "adamw",
)
SCHEDULE_CHOICES = ("constant", "step", "exponential", "cosine")

# Each optimiser's own hyperparameters (beyond learning_rate and weight_decay)
# with their defaults (those of the papers / PyTorch).
OPTIMIZER_HPARAMS: dict[str, dict[str, float]] = {
    "sgd": {},
    "momentum": {"momentum": 0.9},
    "nesterov": {"momentum": 0.9},
    "adagrad": {"eps": 1e-10, "initial_accumulator_value": 0.1},
    "adadelta": {"rho": 0.9, "eps": 1e-6},
    "rmsprop": {"decay": 0.99, "eps": 1e-8, "momentum": 0.0},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8},
}

# Every optimiser's own hyperparameters together: the optimiser-specific keys of the `optimizer` block.
OWN_HPARAM_KEYS = tuple(sorted({k for hp in OPTIMIZER_HPARAMS.values() for k in hp}))
# Keys every optimiser takes besides its own ones.
COMMON_HPARAMS = ("learning_rate", "weight_decay", "grad_clip_norm")
# Own hyperparameters that are decay rates or betas: valid in [0, 1).
UNIT_HPARAMS = ("momentum", "b1", "b2", "rho", "decay")


def takes_hyperparameter(name: str, key: str) -> bool:
    """Whether optimiser `name` takes `optimizer.<key>`: a common key or one of its own."""
    return key in COMMON_HPARAMS or key in OPTIMIZER_HPARAMS.get(name, {})


def optimizer_problems(opt: Any) -> list[str]:
    """What is wrong with the `optimizer` config block (empty when valid); each message names its key."""
    errors = []
    if opt.name not in OPTIMIZER_CHOICES:
        errors.append(f"optimizer.name={opt.name!r} is unknown; valid choices: {', '.join(OPTIMIZER_CHOICES)}")
    else:
        for key in OWN_HPARAM_KEYS:
            if opt.get(key) is not None and not takes_hyperparameter(opt.name, key):
                errors.append(
                    f"optimizer.{key} is set but optimizer {opt.name!r} has no such hyperparameter; "
                    f"it takes: {', '.join(COMMON_HPARAMS + tuple(OPTIMIZER_HPARAMS[opt.name]))}"
                )
    checks = [
        (opt.learning_rate > 0, f"optimizer.learning_rate must be > 0, got {opt.learning_rate}"),
        (opt.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {opt.weight_decay}"),
        (opt.grad_clip_norm >= 0, f"optimizer.grad_clip_norm must be >= 0 (0 disables), got {opt.grad_clip_norm}"),
        (0 <= opt.ema_decay < 1, f"optimizer.ema_decay must be in [0, 1) (0: off), got {opt.ema_decay}"),
        (opt.accumulate_steps >= 1,
         f"optimizer.accumulate_steps must be >= 1 (1: no accumulation), got {opt.accumulate_steps}"),
    ]
    checks += [(0.0 <= opt[key] < 1.0, f"optimizer.{key} must be in [0, 1), got {opt[key]}")
               for key in UNIT_HPARAMS if opt.get(key) is not None]
    return errors + [message for ok, message in checks if not ok]


def schedule_problems(sched: Any) -> list[str]:
    """What is wrong with the `schedule` config block (empty when valid); each message names its key."""
    checks = [
        (sched.name in SCHEDULE_CHOICES,
         f"schedule.name={sched.name!r} is unknown; valid choices: {', '.join(SCHEDULE_CHOICES)}"),
        (sched.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {sched.warmup_epochs}"),
        (sched.gamma > 0, f"schedule.gamma must be > 0, got {sched.gamma}"),
        (sched.decay_rate > 0, f"schedule.decay_rate must be > 0, got {sched.decay_rate}"),
        (sched.decay_every_epochs > 0, f"schedule.decay_every_epochs must be > 0, got {sched.decay_every_epochs}"),
        (all(b > 0 for b in sched.boundaries_epochs),
         f"schedule.boundaries_epochs must be positive epochs, got {tuple(sched.boundaries_epochs)}"),
    ]
    return [message for ok, message in checks if not ok]


def kernel_mask(params: Any) -> Any:
    """True for conv/dense kernels: the leaves weight decay and L1/L2 apply to.

    Biases and BatchNorm scales/offsets are left alone, as is standard.
    """

    def is_kernel(path, leaf) -> bool:
        last = path[-1]
        key = getattr(last, "key", getattr(last, "name", None))
        return key == "kernel" and jnp.ndim(leaf) > 1

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_lr_scale(
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    boundaries_epochs: tuple[float, ...] = (),
    gamma: float = 0.1,
    decay_rate: float = 0.96,
    decay_every_epochs: float = 1.0,
    final_scale: float = 0.0,
) -> Callable[[jax.Array], jax.Array]:
    """The schedule's shape, peak 1: multiply it by the peak learning rate.

    Args:
      name: one of `SCHEDULE_CHOICES`.
      total_steps: length of training, used by `cosine`.
      steps_per_epoch: converts epoch boundaries to steps.
      warmup_steps: linear warmup from 0 to 1 over these steps, then the schedule
        (which starts counting after the warmup).
      boundaries_epochs: for `step`: multiply by `gamma` at each of these epochs.
      gamma: the factor of `step`.
      decay_rate: for `exponential`: factor per `decay_every_epochs`, applied
        smoothly (`decay_rate ** (epochs_done / decay_every_epochs)`).
      decay_every_epochs: see `decay_rate`.
      final_scale: for `cosine`: the scale reached at the end (0 by default).
    """
    if name == "constant":
        main = optax.constant_schedule(1.0)
    elif name == "step":
        main = optax.piecewise_constant_schedule(
            1.0, {max(1, round(e * steps_per_epoch) - warmup_steps): gamma for e in boundaries_epochs}
        )
    elif name == "exponential":
        main = optax.exponential_decay(
            1.0, transition_steps=max(1, round(decay_every_epochs * steps_per_epoch)), decay_rate=decay_rate
        )
    elif name == "cosine":
        main = optax.cosine_decay_schedule(1.0, max(1, total_steps - warmup_steps), alpha=final_scale)
    else:
        raise ValueError(f"Unknown schedule {name!r}; valid choices: {', '.join(SCHEDULE_CHOICES)}")
    if warmup_steps <= 0:
        return main
    warmup = optax.linear_schedule(0.0, 1.0, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def _scale_by(name: str, hp: dict[str, jax.Array]) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.identity()
    if name in ("momentum", "nesterov"):
        return optax.trace(decay=hp["momentum"], nesterov=name == "nesterov")
    if name == "adagrad":
        return optax.scale_by_rss(
            initial_accumulator_value=hp["initial_accumulator_value"], eps=hp["eps"]
        )
    if name == "adadelta":
        return optax.scale_by_adadelta(rho=hp["rho"], eps=hp["eps"])
    if name == "rmsprop":
        return optax.chain(
            optax.scale_by_rms(decay=hp["decay"], eps=hp["eps"]),
            optax.trace(decay=hp["momentum"]),
        )
    if name in ("adam", "adamw"):
        return optax.scale_by_adam(b1=hp["b1"], b2=hp["b2"], eps=hp["eps"])
    raise ValueError(f"Unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZER_CHOICES)}")


def make_optimizer(
    name: str,
    learning_rate: float,
    lr_scale: Callable[[jax.Array], jax.Array] | None = None,
    weight_decay: float = 0.0,
    grad_clip_norm: float = 0.0,
    **hparams: float,
) -> optax.GradientTransformation:
    """Builds the chain clip -> `name` -> decoupled weight decay -> -lr(t).

    Args:
      name: one of `OPTIMIZER_CHOICES`.
      learning_rate: the peak learning rate (traced).
      lr_scale: schedule shape with peak 1 (see `make_lr_scale`); constant if None.
      weight_decay: decoupled weight decay on kernels, `w <- w - lr * wd * w`
        (Loshchilov & Hutter; applies to any optimiser, `adamw` is `adam` with it).
      grad_clip_norm: clip the global gradient norm to this value; 0 disables.
      **hparams: the optimiser's own hyperparameters (`OPTIMIZER_HPARAMS[name]`);
        missing ones take the defaults listed there.
    """
    if name not in OPTIMIZER_CHOICES:
        raise ValueError(f"Unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZER_CHOICES)}")
    defaults = OPTIMIZER_HPARAMS[name]
    allowed = tuple(defaults)
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise ValueError(
            f"Optimizer {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(('learning_rate', 'weight_decay') + allowed)}"
        )
    own = {key: float(hparams.get(key, defaults[key])) for key in allowed}

    def build(learning_rate, lr_scale, weight_decay, **own_hp):
        return optax.chain(
            _scale_by(name, own_hp),
            optax.add_decayed_weights(weight_decay, mask=kernel_mask),
            optax.scale_by_learning_rate(learning_rate * lr_scale),
        )

    # inject_hyperparams finds the hyperparameters from the factory's signature,
    # so spell out this optimiser's own ones instead of leaving them in **own_hp.
    build.__signature__ = inspect.Signature(
        [
            inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY)
            for key in ("learning_rate", "lr_scale", "weight_decay", *allowed)
        ]
    )

    inner = optax.inject_hyperparams(build)(
        learning_rate=float(learning_rate),
        lr_scale=lr_scale if lr_scale is not None else 1.0,
        weight_decay=float(weight_decay),
        **own,
    )
    if grad_clip_norm and grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip_norm), inner)
    return inner


def optimizer_from_config(config, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """`make_optimizer` + `make_lr_scale` from the `optimizer` and `schedule` config blocks."""
    opt = config.optimizer
    sched = config.schedule
    accumulate = int(opt.get("accumulate_steps", 1) or 1)
    # With accumulation the inner optimiser counts updates, not micro-batches: the
    # schedule is laid out in updates (each of `accumulate` micro-batches).
    steps_per_epoch = max(1, steps_per_epoch // accumulate)
    total_steps = max(1, total_steps // accumulate)
    warmup_steps = int(round(sched.get("warmup_epochs", 0.0) * steps_per_epoch))
    lr_scale = make_lr_scale(
        sched.name,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup_steps,
        boundaries_epochs=tuple(sched.get("boundaries_epochs", ())),
        gamma=sched.get("gamma", 0.1),
        decay_rate=sched.get("decay_rate", 0.96),
        decay_every_epochs=sched.get("decay_every_epochs", 1.0),
        final_scale=sched.get("final_scale", 0.0),
    )
    own = {k: opt[k] for k in OPTIMIZER_HPARAMS.get(opt.name, ()) if opt.get(k) is not None}
    tx = make_optimizer(
        opt.name,
        learning_rate=opt.learning_rate,
        lr_scale=lr_scale,
        weight_decay=opt.get("weight_decay", 0.0),
        grad_clip_norm=opt.get("grad_clip_norm", 0.0),
        **own,
    )
    return accumulate_gradients(tx, accumulate)


def accumulate_gradients(tx: optax.GradientTransformation, every: int) -> optax.GradientTransformation:
    """`tx` applied once per `every` steps to the mean of their gradients (`optax.MultiSteps`).

    The steps in between return zero updates, so `every` micro-batches of B/every
    make the same update as one batch of B (for a model without BatchNorm, whose
    statistics see the micro-batches). `every=1` returns `tx` itself.
    """
    if every <= 1:
        return tx
    return optax.MultiSteps(tx, every_k_schedule=every).gradient_transformation()


def find_hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The injected hyperparameters inside an optimiser state (for logging)."""
    found: dict[str, jax.Array] = {}

    def visit(node):
        if isinstance(node, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)):
            found.update(node.hyperparams)
        elif isinstance(node, (tuple, list)):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def set_hyperparams(opt_state: Any, values: dict[str, Any]) -> Any:
    """Returns `opt_state` with injected hyperparameters replaced by `values`.

    Values keep the dtype of the value they replace (no recompilation), and may
    carry a leading member axis in a population.
    """
    def visit(node):
        if isinstance(node, (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)):
            unknown = set(values) - set(node.hyperparams)
            if unknown:
                raise KeyError(f"no injected hyperparameter(s) {sorted(unknown)}; have {sorted(node.hyperparams)}")
            new = dict(node.hyperparams)
            for key, value in values.items():
                new[key] = jnp.asarray(value, dtype=jnp.asarray(node.hyperparams[key]).dtype)
            return node._replace(hyperparams=new)
        if isinstance(node, optax.MultiStepsState):
            return node._replace(inner_opt_state=visit(node.inner_opt_state))
        if isinstance(node, tuple) and not hasattr(node, "_fields"):
            return tuple(visit(child) for child in node)
        return node

    return visit(opt_state)
