"""One population whose members differ in optimiser and learning-rate schedule: one compiled program.

`common.train` splits members by static values (`optimizer.name`, `schedule.*`)
into groups and compiles init, step and evaluation once per group; on a CPU
that is several seconds of XLA compile per LeNet-5 group, which seven
optimisers (or eight schedules) multiply. Here the optimiser and the schedule
become per-member data instead:

* every distinct optimiser of the members is built by the library
  (`cnnjax.training.optim.make_optimizer`, same chain and defaults as a single
  run) and the member's state holds the state of each; `lax.switch` on the
  member's `choice` applies its own (under a `vmap` plan every branch is
  computed and one selected: element-wise work, cheap next to the network);
* every distinct schedule shape is tabulated (`make_lr_scale` at each step)
  and the member's row is written into its optimiser's injected `lr_scale`
  before each update, exactly the value the library's schedule would give.

The step, the data order, the divergence isolation, the evaluation and the
records are the library's own (`train_step` via `PopulationTrainer`,
`member_keys`, `MemberRecord`), so a member trains as it would alone in
`common.train` and the records read the same.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

MEMBER_PATHS = ("optimizer.name", "optimizer.learning_rate", "seed", "data_seed")
SCHEDULE_KEYS = ("name", "warmup_epochs", "boundaries_epochs", "gamma", "decay_rate", "decay_every_epochs",
                 "final_scale")


class MixedState(NamedTuple):
    count: Any  # updates applied so far (the schedule's step)
    choice: Any  # index of this member's optimiser
    schedule: Any  # row of this member's schedule in the table
    inner: tuple  # the state of every optimiser (only `choice`'s is used)


def mixed_optimizer(txs, scales):
    """An optax transformation applying `txs[state.choice]` with lr scale `scales[state.schedule, count]`.

    `txs` must inject a numeric `lr_scale` (built with `lr_scale=None`); `scales` is [schedules, steps].
    """
    import jax
    import jax.numpy as jnp
    import optax

    from cnnjax.training.optim import set_hyperparams

    scales = jnp.asarray(scales, jnp.float32)

    def init(params):
        zero = jnp.zeros((), jnp.int32)
        return MixedState(zero, zero, zero, tuple(tx.init(params) for tx in txs))

    def update(updates, state, params=None):
        scale = scales[state.schedule, jnp.minimum(state.count, scales.shape[1] - 1)]

        # Every optimiser state gets the scale (all hold the member's peak lr too), so the injected
        # hyperparameters that the step logs as `learning_rate` are the member's whichever state is read.
        inner = tuple(set_hyperparams(s, {"lr_scale": scale}) for s in state.inner)

        def branch(i):
            def apply(operand):
                grads, inner = operand
                out, own = txs[i].update(grads, inner[i], params)
                return out, inner[:i] + (own,) + inner[i + 1:]
            return apply

        if len(txs) == 1:
            out, inner = branch(0)((updates, inner))
        else:
            out, inner = jax.lax.switch(state.choice, [branch(i) for i in range(len(txs))], (updates, inner))
        return out, state._replace(count=state.count + 1, inner=inner)

    return optax.GradientTransformation(init, update)


def _optimizer_key(cfg) -> tuple:
    from cnnjax.training.optim import OPTIMIZER_HPARAMS

    opt = cfg.optimizer
    own = tuple((k, float(opt[k])) for k in OPTIMIZER_HPARAMS[opt.name] if opt.get(k) is not None)
    return opt.name, own, float(opt.get("weight_decay", 0.0)), float(opt.get("grad_clip_norm", 0.0))


def schedule_key(cfg) -> tuple:
    """The schedule settings of a member config; members with equal keys share a row of `schedule_table`."""
    sched = cfg.schedule
    return tuple((k, tuple(sched.get(k)) if k == "boundaries_epochs" else sched.get(k)) for k in SCHEDULE_KEYS)


def schedule_table(keys: list[tuple], steps_per_epoch: int, total_steps: int):
    """[len(keys), total_steps] lr scales: row i is schedule `keys[i]` (see `schedule_key`) at each step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from cnnjax.training.optim import make_lr_scale

    rows = []
    for key in keys:
        s = dict(key)
        fn = make_lr_scale(s["name"], total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                           warmup_steps=int(round(s["warmup_epochs"] * steps_per_epoch)),
                           boundaries_epochs=s["boundaries_epochs"], gamma=s["gamma"], decay_rate=s["decay_rate"],
                           decay_every_epochs=s["decay_every_epochs"], final_scale=s["final_scale"])
        # vmap: a constant schedule ignores its step and would return one number.
        rows.append(np.asarray(jax.vmap(fn)(jnp.arange(max(total_steps, 1))), np.float32))
    return np.stack(rows)


def _check(config, members) -> list:
    from cnnjax.config import validate_config
    from cnnjax.training.config import ConfigError
    from cnnjax.tuning.population import member_config

    if not members:
        raise ValueError("train_mixed needs at least one member")
    errors, cfgs = [], []
    for i, values in enumerate(members):
        bad = [p for p in values if p not in MEMBER_PATHS and not p.startswith("schedule.")]
        if bad:
            errors.append(f"member {i}: cannot vary {', '.join(bad)} here; allowed: "
                          f"{', '.join(MEMBER_PATHS)}, schedule.*")
            continue
        cfg = member_config(config, values)
        try:
            validate_config(cfg)
        except ConfigError as e:
            errors.append(f"member {i} {values}: {e}")
        cfgs.append(cfg)
    if errors:
        raise ValueError("Invalid members:\n  - " + "\n  - ".join(errors))
    return cfgs


def train_mixed(config, members: list[dict[str, Any]], *, dataset, plan: str = "sequential",
                workdir: str | None = None):
    """Trains `members` (dicts over `MEMBER_PATHS` and `schedule.*`) as ONE population; returns MemberRecords.

    Everything else (model, data, batch size, epochs, loss) comes from `config`.
    Records are in member order, with `train_history` and `val_history`. With a
    `workdir`, the member curves (with `train/learning_rate`, the lr of the
    last step of each logging window) go to `workdir/metrics.jsonl`.
    """
    import jax
    import jax.numpy as jnp

    from cnnjax.training import config as config_lib
    from cnnjax.training.feeds import member_keys
    from cnnjax.training.optim import make_optimizer, set_hyperparams
    from cnnjax.training.state import create_train_state, make_apply_fn
    from cnnjax.training.train import build_model
    from cnnjax.training.writers import MetricWriter
    from cnnjax.tuning.population import Population
    from cnnjax.tuning.runner import MemberRecord, PopulationTrainer

    cfgs = _check(config, members)
    n = dataset.train.num_examples
    config_lib.validate_against_data(config, n)
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.num_epochs

    opt_keys = list(dict.fromkeys(_optimizer_key(c) for c in cfgs))
    sched_keys = list(dict.fromkeys(schedule_key(c) for c in cfgs))
    txs = [make_optimizer(name, learning_rate=1.0, lr_scale=None, weight_decay=wd, grad_clip_norm=clip, **dict(own))
           for name, own, wd, clip in opt_keys]
    tx = mixed_optimizer(txs, schedule_table(sched_keys, steps_per_epoch, total_steps))

    model = build_model(config, dataset.num_classes)
    apply_fn = make_apply_fn(model, config.get("precision", "float32"))
    loss = config.loss
    keys = [member_keys(int(c.seed), c.get("data_seed")) for c in cfgs]

    def one(key):
        return create_train_state(model, tx, key, tuple(dataset.image_shape), l2=loss.l2, l1=loss.l1,
                                  label_smoothing=loss.label_smoothing, apply_fn=apply_fn)

    state = jax.jit(jax.vmap(one))(jnp.stack([k[0] for k in keys]))
    lrs = jnp.asarray([float(c.optimizer.learning_rate) for c in cfgs], jnp.float32)
    opt = state.opt_state._replace(
        choice=jnp.asarray([opt_keys.index(_optimizer_key(c)) for c in cfgs], jnp.int32),
        schedule=jnp.asarray([sched_keys.index(schedule_key(c)) for c in cfgs], jnp.int32),
        # One copy per optimiser state: the step donates the state, and a buffer cannot be donated twice.
        inner=tuple(set_hyperparams(s, {"learning_rate": jnp.array(lrs)}) for s in state.opt_state.inner),
    )
    population = Population(state=state.replace(opt_state=opt), data_keys=jnp.stack([k[1] for k in keys]),
                            alive=jnp.ones(len(members), bool), values=[dict(m) for m in members],
                            steps_per_epoch=steps_per_epoch, total_steps=total_steps, ids=list(range(len(members))))
    records = {i: MemberRecord(i, dict(m)) for i, m in enumerate(members)}
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir, tensorboard=False) if workdir else None
    trainer = PopulationTrainer(config, dataset, records, writer=writer, plan=plan)
    eval_every = max(1, int(config.eval_every_epochs * steps_per_epoch)) if config.eval_every_epochs else None
    try:
        trainer.train(population, total_steps, eval_every)
    finally:
        if writer:
            writer.close()
    return [records[i] for i in range(len(members))]
