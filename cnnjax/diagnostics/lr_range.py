"""The learning-rate range check: short runs over log-spaced rates, as one population.

All rates train side by side in ONE compiled program: the population of
`cnnjax.tuning.population` (members differ only in the traced
`optimizer.learning_rate`), its member step mapped with the `vmap` plan of
`cnnjax.tuning.plans`, every member on the same batches. The schedule is made
constant (no warmup) so each member trains at the rate it is labelled with.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.diagnostics.checks import FAIL, PASS, CheckContext, CheckResult
from cnnjax.tuning import plans
from cnnjax.tuning.population import epoch_permutations, init_population, make_member_step

TOO_SMALL = "too small: loss barely moves"
GOOD = "good"
TOO_LARGE = "too large: loss explodes / NaN"
# Loss over the last steps is averaged over this many steps (minibatch noise).
TAIL_STEPS = 5


def learning_rates(lr_min: float, lr_max: float, points: int) -> list[float]:
    """`points` log-spaced rates from `lr_min` to `lr_max`, rounded to 3 significant digits."""
    return [float(f"{v:.3g}") for v in np.geomspace(lr_min, lr_max, points)]


def classify(losses: np.ndarray, finite: np.ndarray, small_drop: float, explode_factor: float) -> str:
    """One member's class from its per-step losses and finiteness flags."""
    start = float(losses[0])
    if not np.all(finite) or not np.all(np.isfinite(losses)) or float(np.max(losses)) > explode_factor * start:
        return TOO_LARGE
    end = float(np.mean(losses[-TAIL_STEPS:]))
    if end > (1.0 - small_drop) * start:
        return TOO_SMALL
    return GOOD


def train_population(ctx: CheckContext, rates: list[float], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Trains one member per rate for `steps` steps; returns [steps, P] losses and finite flags.

    This is the only place that builds the population program, so switching to
    another population runner means changing this function.
    """
    config = ctx.config.copy_and_resolve_references()
    with config.unlocked():
        config.schedule.name = "constant"
        config.schedule.warmup_epochs = 0.0
    dataset = ctx.dataset
    population = init_population(
        config, [{"optimizer.learning_rate": lr} for lr in rates], dataset.num_classes,
        dataset.image_shape, dataset.train.num_examples, shared_batches=True)
    mean, std = jnp.asarray(dataset.mean), jnp.asarray(dataset.std)
    member_step = make_member_step(config, mean, std)
    step_fn = jax.jit(plans.map_members(member_step, plans.Plan("vmap"), shared_batches=True))
    images, labels = jnp.asarray(dataset.train.images), jnp.asarray(dataset.train.labels)
    state, alive = population.state, population.alive
    losses, finite = [], []
    permutation, permutation_epoch = None, -1
    for step in range(steps):
        epoch, index = divmod(step, population.steps_per_epoch)
        if epoch != permutation_epoch:
            permutation = epoch_permutations(population.data_keys, epoch, dataset.train.num_examples, True)
            permutation_epoch = epoch
        state, alive, metrics = step_fn(state, alive, population.data_keys, permutation, jnp.asarray(index),
                                        images, labels)
        losses.append(metrics["loss"])
        finite.append(alive)
    return np.asarray(jax.device_get(losses), np.float64), np.asarray(jax.device_get(finite), bool)


def recommend(rates: list[float], classes: list[str], final_losses: list[float]) -> dict:
    """The widest contiguous run of good rates and the best rate inside it."""
    runs, current = [], []
    for i, label in enumerate(classes):
        if label == GOOD:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    if not runs:
        return {}
    run = max(runs, key=len)
    best = min(run, key=lambda i: final_losses[i])
    return {"low": rates[run[0]], "high": rates[run[-1]], "best": rates[best]}


def check_lr_range(ctx: CheckContext) -> CheckResult:
    """Short runs over log-spaced learning rates, one population; recommends a range."""
    start = time.time()
    s = ctx.settings
    rates = learning_rates(s.lr_min, s.lr_max, s.lr_points)
    losses, finite = train_population(ctx, rates, s.lr_steps)
    classes = [classify(losses[:, i], finite[:, i], s.lr_small_drop, s.lr_explode_factor) for i in range(len(rates))]
    finals = [float(np.mean(losses[-TAIL_STEPS:, i])) if classes[i] != TOO_LARGE else math.inf
              for i in range(len(rates))]
    found = recommend(rates, classes, finals)
    configured = float(ctx.config.optimizer.learning_rate)
    table = "; ".join(f"{lr:g}: {label.split(':')[0]}" for lr, label in zip(rates, classes))
    if found:
        inside = found["low"] <= configured <= found["high"]
        measured = f"{table}. Good range {found['low']:g} .. {found['high']:g} (lowest loss at {found['best']:g})"
        advice = (f"Use a learning rate in {found['low']:g} .. {found['high']:g} (constant, {s.lr_steps} steps); "
                  f"the configured {configured:g} is " + ("inside it." if inside else
                                                          "outside it: consider changing optimizer.learning_rate."))
    else:
        measured = f"{table}. No learning rate was good"
        advice = ("No rate made the loss fall without exploding: widen babysit.lr_min/lr_max or raise "
                  "babysit.lr_steps; if every rate explodes or none moves, fix the checks above first.")
    return CheckResult(
        "learning-rate range", PASS if found else FAIL, measured,
        f"at least one rate between {s.lr_min:g} and {s.lr_max:g} lowers the loss by >= {s.lr_small_drop:.0%} "
        f"in {s.lr_steps} steps without exceeding {s.lr_explode_factor:g} x the start",
        advice,
        {"learning_rates": rates, "classes": classes, "recommended": found,
         "losses": [[float(v) if math.isfinite(v) else None for v in losses[:, i]] for i in range(len(rates))],
         "population_program": "cnnjax.tuning.population + plans.map_members(vmap), one jit"},
        seconds=time.time() - start,
    )
