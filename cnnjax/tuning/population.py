"""A population: P members of one model trained side by side by the same step.

The state is one `TrainState` whose every leaf has a leading member axis:
parameters, BatchNorm statistics (never mixed across members), optimiser state,
rng, and the traced hyperparameters (optimiser ones inside `opt_state`, loss
ones in `loss_hparams`, `dropout_rate` in `model_hparams`). The member step is
`cnnjax.training.feeds.make_step_fn` — the single-run step — mapped over that
axis by one of the execution plans in `cnnjax.tuning.plans`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnnjax.data import pipeline
from cnnjax.training.feeds import eval_split, make_step_fn, member_keys
from cnnjax.training.loop import Schedule
from cnnjax.training.optim import find_hyperparams, optimizer_from_config, set_hyperparams
from cnnjax.training.state import TrainState, create_train_state, make_apply_fn
from cnnjax.training.train import build_model

LOSS_KEYS = {"loss.l2": "l2", "loss.l1": "l1", "loss.label_smoothing": "label_smoothing"}


def member_config(config: ml_collections.ConfigDict, values: dict[str, Any]) -> ml_collections.ConfigDict:
    """`config` with one member's values written in (what a single run would use).

    A member that switches `optimizer.name` drops the base config's
    hyperparameters that the new optimiser does not take (e.g. `momentum` for
    Adam); it uses the new optimiser's defaults unless it sets them itself.
    """
    from cnnjax.training.optim import OPTIMIZER_HPARAMS, OWN_HPARAM_KEYS, takes_hyperparameter

    member = config.copy_and_resolve_references()
    name = values.get("optimizer.name")
    if name is not None and name != config.optimizer.name and name in OPTIMIZER_HPARAMS:
        for key in (k for k in OWN_HPARAM_KEYS if not takes_hyperparameter(name, k)):
            if key in member.optimizer:
                member.optimizer[key] = None
    with member.unlocked():
        for path, value in values.items():
            node = member
            parts = path.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
    return member


@dataclasses.dataclass
class Population:
    """Stacked member states plus what the loop needs about them."""

    state: TrainState
    data_keys: jax.Array  # [P, 2] data-order / augmentation keys
    alive: jax.Array  # [P] bool: False once a member diverged (frozen)
    values: list[dict[str, Any]]  # each member's traced hyperparameter values
    steps_per_epoch: int
    total_steps: int
    ids: list[int] = dataclasses.field(default_factory=list)  # members' ids in the sweep
    step: int = 0  # steps taken (all members move in lockstep)

    @property
    def size(self) -> int:
        return len(self.values)


def _stack(values: Sequence[Any], dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(np.asarray(values), dtype)


# Compiled initialisers, reused by later populations of the same config and shapes
# (the next coarse-to-fine round, another trial): XLA's compile of an init takes
# seconds on a CPU. Keyed by the config's JSON; the oldest entry goes first.
_INITIALISERS: dict[tuple, Any] = {}
_MAX_INITIALISERS = 16


def _initialiser(config, num_classes, image_shape, steps_per_epoch, total_steps, swept_scale):
    key = (config.to_json_best_effort(sort_keys=True), num_classes, image_shape, steps_per_epoch, total_steps,
           swept_scale)
    if key in _INITIALISERS:
        return _INITIALISERS[key]
    model = build_model(config, num_classes)
    tx = optimizer_from_config(config, steps_per_epoch, total_steps)
    apply_fn = make_apply_fn(model, config.get("precision", "float32"))

    def one(key, scale):
        init_model = model.clone(init_scale=scale) if swept_scale else model
        return create_train_state(
            init_model, tx, key, image_shape,
            l2=config.loss.l2, l1=config.loss.l1, label_smoothing=config.loss.label_smoothing,
            apply_fn=apply_fn, ema_decay=config.optimizer.get("ema_decay", 0.0),
        )

    if len(_INITIALISERS) >= _MAX_INITIALISERS:
        _INITIALISERS.pop(next(iter(_INITIALISERS)))
    _INITIALISERS[key] = jax.jit(jax.vmap(one))
    return _INITIALISERS[key]


def init_population(
    config: ml_collections.ConfigDict,
    members: Sequence[dict[str, Any]],
    num_classes: int,
    image_shape: tuple[int, ...],
    num_train_examples: int,
    shared_batches: bool = False,
) -> Population:
    """Initialises P members of `config`'s model, member i with `members[i]` values.

    `members[i]` holds traced hyperparameters only (paths of
    `cnnjax.tuning.space.TRACED_PATHS`); every other key comes from `config`.
    With `shared_batches`, every member follows member 0's data order.
    """
    if len(members) < 1:
        raise ValueError(f"a population needs at least 1 member, got {len(members)}")
    schedule = Schedule.from_config(config, num_train_examples)
    steps_per_epoch, total_steps = schedule.steps_per_epoch, schedule.total_steps
    keys = [member_keys(int(m.get("seed", config.seed)),
                        m.get("data_seed", config.get("data_seed"))) for m in members]
    init_keys = jnp.stack([k[0] for k in keys])
    data_keys = jnp.stack([keys[0][1]] * len(keys)) if shared_batches else jnp.stack([k[1] for k in keys])

    swept_scale = any("model.init_scale" in m for m in members)
    default_scale = config.model.get("init_scale")
    scales = _stack([m.get("model.init_scale", default_scale if default_scale is not None else 1.0)
                     for m in members])

    initialise = _initialiser(config, num_classes, tuple(image_shape), steps_per_epoch, total_steps, swept_scale)
    state = initialise(init_keys, scales)

    state = set_member_values(state, config, members)
    return Population(
        state=state,
        data_keys=data_keys,
        alive=jnp.ones(len(members), bool),
        values=[dict(m) for m in members],
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        ids=list(range(len(members))),
    )


def set_member_values(state: TrainState, config: ml_collections.ConfigDict,
                      members: Sequence[dict[str, Any]]) -> TrainState:
    """Writes each member's traced hyperparameters into the stacked state.

    Optimiser ones go into `opt_state`, loss ones into `loss_hparams`, the
    dropout rate into `model_hparams`; keys a member lacks take `config`'s value.
    (`seed`, `data_seed` and `model.init_scale` act at initialisation only.)
    """
    opt_values = {}
    injected = find_hyperparams(state.opt_state)
    if any("optimizer.ema_decay" in m for m in members):  # lives in the state's EMA, not in opt_state
        if not state.ema:
            raise ValueError("optimizer.ema_decay can vary per member only when the config's ema_decay is > 0")
        decay = _stack([m.get("optimizer.ema_decay", config.optimizer.ema_decay) for m in members])
        state = state.replace(ema={**state.ema, "decay": decay})
    for path in sorted({p for m in members for p in m if p.startswith("optimizer.") and p != "optimizer.ema_decay"}):
        name = path.split(".", 1)[1]
        if name not in injected:
            raise ValueError(f"{path} is not a hyperparameter of optimizer {config.optimizer.name!r}")
        base = config.optimizer.get(name)
        opt_values[name] = _stack([m.get(path, base) for m in members])
    if opt_values:
        state = state.replace(opt_state=set_hyperparams(state.opt_state, opt_values))
    loss_hparams = dict(state.loss_hparams)
    for path, name in LOSS_KEYS.items():
        if any(path in m for m in members):
            loss_hparams[name] = _stack([m.get(path, config.loss[name]) for m in members])
    model_hparams = dict(state.model_hparams)
    if any("model.dropout_rate" in m for m in members):
        base = config.model.get("dropout_rate") or 0.0
        model_hparams["dropout_rate"] = _stack([m.get("model.dropout_rate", base) for m in members])
    return state.replace(loss_hparams=loss_hparams, model_hparams=model_hparams)


def make_member_step(config: ml_collections.ConfigDict, mean, std):
    """One member's step with divergence isolation.

    `member_step(state, alive, data_key, permutation, index, images, labels)`:
    a member that is not alive, or whose step is not finite, keeps its state
    and is not alive afterwards (frozen for good, marked diverged).
    """
    step = make_step_fn(config, mean, std)

    def member_step(state, alive, data_key, permutation, index, images, labels):
        # train_step itself keeps the old state unless (alive and finite).
        new_state, metrics = step(state, data_key, images, labels, permutation, index, active=alive)
        return new_state, metrics["finite"] > 0, metrics

    return member_step


def epoch_permutations(data_keys: jax.Array, epoch: int, num_examples: int, shared: bool) -> jax.Array:
    """[P, N] per-member example orders (or [N] when batches are shared)."""
    if shared:
        return pipeline.epoch_permutation(data_keys[0], epoch, num_examples)
    return jax.vmap(pipeline.epoch_permutation, in_axes=(0, None, None))(data_keys, epoch, num_examples)


def make_population_eval(mean, std, batched: bool = True, chunk_size: int | None = None):
    """Evaluates every member on a padded split in one jitted call.

    `batched`: vmap over members; otherwise `lax.map` (`chunk_size` members at
    a time), which avoids grouped convolutions, the faster choice wherever the
    training plan is not plain vmap. Both give the same sums.
    """

    def one(s, images, labels, mask):
        return eval_split(s, images, labels, mask, mean, std)

    def evaluate(state, images, labels, mask):
        if batched:
            return jax.vmap(lambda s: one(s, images, labels, mask))(state)
        return jax.lax.map(lambda s: one(s, images, labels, mask), state, batch_size=chunk_size)

    return jax.jit(evaluate)


def take_members(population: Population, indices: Sequence[int]) -> Population:
    """A smaller (or reordered) population: members `indices`, states copied on device."""
    idx = jnp.asarray(np.asarray(indices, np.int32))
    return dataclasses.replace(
        population,
        state=jax.tree_util.tree_map(lambda x: x[idx], population.state),
        data_keys=population.data_keys[idx],
        alive=population.alive[idx],
        values=[dict(population.values[i]) for i in indices],
        ids=[population.ids[i] for i in indices],
    )
