"""The speed run's pure programs (init, whitening fit, one epoch as a scan, evaluation) and their compilation.

Own train step: cnnjax's train_step has no Lookahead, no per-group optimiser (frozen layers), no alternating flips.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import numpy as np

from experiments.speedrun.optim import make_optimizer


@dataclasses.dataclass
class Programs:
    """The speed run's pure functions (not yet jitted) and the sizes they were built for."""

    init: Callable[..., Any]
    fit_whitening: Callable[..., Any]
    train_epoch: Callable[..., Any]
    evaluate: Callable[..., Any]
    steps_per_epoch: int
    total_steps: int
    num_epochs: int


def build(config, num_train: int, num_classes: int, mean: np.ndarray, std: np.ndarray) -> Programs:
    """Model, optimiser and the functions of one run; sizes are static."""
    import jax
    import jax.numpy as jnp
    import optax

    from cnnjax.models import airbench, get_model
    from cnnjax.training.state import make_apply_fn
    from cnnjax.training.steps import cross_entropy

    batch = int(config.batch_size)
    if num_train < batch:
        raise ValueError(f"batch_size={batch} is larger than the training split ({num_train} images)")
    steps_per_epoch = num_train // batch  # the last partial batch is dropped, as in the reference
    total_steps = math.ceil(steps_per_epoch * config.num_epochs)
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    model = get_model(config.model.name, num_classes, widths=tuple(config.model.widths),
                      bn_momentum=config.model.bn_momentum, bn_epsilon=config.model.bn_epsilon,
                      logit_scale=config.model.logit_scale, conv_impl=config.model.conv_impl,
                      whiten_kernel_size=config.whiten.kernel_size)
    apply_fn = make_apply_fn(model, config.precision)
    tx = make_optimizer(config, steps_per_epoch, total_steps)
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    look = config.lookahead
    translate = int(config.augment.translate)
    flip_mode = config.augment.flip
    if flip_mode not in ("alternate", "random", "none"):
        raise ValueError(f"augment.flip={flip_mode!r}; valid choices: alternate, random, none")

    def normalize(images):
        return (images.astype(jnp.float32) / 255.0 - mean) / std

    def init(key, image_shape):
        params_key, flip_key = jax.random.split(key)
        variables = model.init(params_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
        params, stats = variables["params"], variables["batch_stats"]
        return {
            "params": params, "batch_stats": stats, "opt_state": tx.init(params),
            "slow_params": params, "slow_stats": stats, "step": jnp.zeros((), jnp.int32),
            # Alternating flip: this half of the images is flipped in even epochs, the rest in odd ones.
            "flip": jax.random.bernoulli(flip_key, 0.5, (num_train,)),
        }

    def fit_whitening(state, images):
        kernel = airbench.whitening_kernel(normalize(images), config.whiten.kernel_size, config.whiten.eps)
        params = airbench.set_whitening(state["params"], kernel)
        return {**state, "params": params, "slow_params": params}

    def augment(images, flips, key):
        if translate:
            height, width, channels = images.shape[1:]
            padded = jnp.pad(images, ((0, 0), (translate, translate), (translate, translate), (0, 0)), mode="reflect")
            shifts = jax.random.randint(key, (images.shape[0], 2), 0, 2 * translate + 1)
            images = jax.vmap(lambda im, s: jax.lax.dynamic_slice(im, (s[0], s[1], 0), (height, width, channels)))(
                padded, shifts)
        return jnp.where(flips[:, None, None, None], images[:, :, ::-1, :], images)

    def lookahead(step, fast, slow):
        """Every `every_steps` the slow copy moves toward the weights, which then take it; the last step ends on it."""
        periodic = step % look.every_steps == 0
        decay = look.decay * (step.astype(jnp.float32) / total_steps) ** look.power
        # Written s + (1 - decay)(f - s) so weights that never change (the frozen ones) stay bitwise equal.
        slow = jax.tree.map(lambda s, f: jnp.where(periodic, s + (1 - decay) * (f - s), s), slow, fast)
        take = periodic | (step == total_steps)
        fast = jax.tree.map(lambda s, f: jnp.where(take, s, f), slow, fast)
        return fast, slow

    def train_step(state, images, labels, flips, key):
        flip_key, shift_key = jax.random.split(key)
        if flip_mode == "random":
            flips = jax.random.bernoulli(flip_key, 0.5, flips.shape)
        elif flip_mode == "none":
            flips = jnp.zeros_like(flips)
        x = normalize(augment(images, flips, shift_key))

        def loss_fn(params):
            logits, updates = apply_fn({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                                       mutable=["batch_stats"])
            # The reference sums the loss over the batch; its learning rates are set for that.
            loss = cross_entropy(logits, labels, config.loss.label_smoothing) * labels.shape[0]
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step = state["step"] + 1
        (params, stats), (slow_params, slow_stats) = lookahead(
            step, (params, stats), (state["slow_params"], state["slow_stats"]))
        metrics = {"loss": loss / labels.shape[0], "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
                   "active": jnp.ones((), jnp.float32)}
        new_state = {**state, "params": params, "batch_stats": stats, "opt_state": opt_state,
                     "slow_params": slow_params, "slow_stats": slow_stats, "step": step}
        return new_state, metrics

    def train_epoch(state, images, labels, epoch, key):
        order_key, step_key = jax.random.split(key)
        order = jax.random.permutation(order_key, num_train)[: steps_per_epoch * batch].reshape(steps_per_epoch, batch)
        epoch_flips = state["flip"] ^ (epoch % 2 == 1) if flip_mode == "alternate" else state["flip"]

        def body(state, xs):
            index, step_key = xs
            new_state, metrics = train_step(state, images[index], labels[index], epoch_flips[index], step_key)
            # Past the last step (in a fractional final epoch) the step is computed and discarded: a select
            # rather than `lax.cond` keeps the compiled epoch free of data-dependent branches.
            active = state["step"] < total_steps
            new_state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
            return new_state, jax.tree.map(lambda m: jnp.where(active, m, 0.0), metrics)

        state, metrics = jax.lax.scan(body, state, (order, jax.random.split(step_key, steps_per_epoch)))
        active = jnp.maximum(jnp.sum(metrics["active"]), 1.0)
        return state, {"loss": jnp.sum(metrics["loss"]) / active, "accuracy": jnp.sum(metrics["accuracy"]) / active}

    def evaluate(params, stats, images, labels, *, tta_level: int, eval_batch: int):
        """Accuracy on `images`, test-time augmented at `tta_level` (0 none, 1 mirror, 2 mirror + translations)."""
        variables = {"params": params, "batch_stats": stats}
        count = images.shape[0]
        chunks = -(-count // eval_batch)
        padded = jnp.pad(images, ((0, chunks * eval_batch - count), (0, 0), (0, 0), (0, 0)))
        height, width = images.shape[1:3]

        def logits_of(chunk):
            x = normalize(chunk)
            views = [x]
            if tta_level >= 1:
                views.append(x[:, :, ::-1])
            if tta_level >= 2:
                wide = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
                for shifted in (wide[:, :height, :width], wide[:, 2:, 2:]):
                    views += [shifted, shifted[:, :, ::-1]]
            # One forward pass over every view.
            out = apply_fn(variables, jnp.concatenate(views), train=False).reshape(len(views), eval_batch, -1)
            if tta_level == 0:
                return out[0]
            mirror = 0.5 * (out[0::2] + out[1::2])
            return mirror[0] if tta_level == 1 else 0.5 * mirror[0] + 0.25 * (mirror[1] + mirror[2])

        logits = jax.lax.map(logits_of, padded.reshape(chunks, eval_batch, *images.shape[1:]))
        predictions = jnp.argmax(logits.reshape(chunks * eval_batch, -1)[:count], -1)
        return jnp.mean(predictions == labels)

    return Programs(init=init, fit_whitening=fit_whitening, train_epoch=train_epoch, evaluate=evaluate,
                    steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_epochs=num_epochs)


@dataclasses.dataclass
class Compiled:
    init: Any
    fit_whitening: Any
    train_epoch: Any
    epoch_eval: Any
    final_eval: Any
    seconds: dict[str, float]


def compile_programs(programs: Programs, config, device_data: dict[str, Any],
                     compiler_options: dict[str, Any] | None = None) -> Compiled:
    """Lowers and compiles every program for the data's shapes; times each compile.

    `compiler_options` go to XLA's `compile` (the tests lower the optimisation
    level to compile faster; timed runs leave them alone).
    """
    import jax
    import jax.numpy as jnp

    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **jit_kwargs):
        start = time.perf_counter()
        compiled = jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options)
        seconds[name] = time.perf_counter() - start
        return compiled

    image_shape = tuple(device_data["train_images"].shape[1:])
    key = jax.random.PRNGKey(0)
    init = timed("init", functools.partial(programs.init, image_shape=image_shape), key)
    state = jax.eval_shape(functools.partial(programs.init, image_shape=image_shape), key)
    fit = timed("fit_whitening", programs.fit_whitening, state, device_data["whiten_images"], donate_argnums=0)
    epoch = timed("train_epoch", programs.train_epoch, state, device_data["train_images"],
                  device_data["train_labels"], jnp.zeros((), jnp.int32), key, donate_argnums=0)
    evals = {}
    for name, level in (("epoch_eval", config.eval.epoch_tta_level), ("final_eval", config.eval.tta_level)):
        fn = functools.partial(programs.evaluate, tta_level=int(level), eval_batch=int(config.eval.batch_size))
        if name == "final_eval" and level == config.eval.epoch_tta_level:
            evals[name] = evals["epoch_eval"]
            continue
        evals[name] = timed(name, fn, state["params"], state["batch_stats"], device_data["val_images"],
                            device_data["val_labels"])
    return Compiled(init=init, fit_whitening=fit, train_epoch=epoch, seconds=seconds, **evals)
