"""The speed run's optimiser: Nesterov SGD per parameter group with a piecewise-linear schedule."""

from __future__ import annotations

import functools


def lr_factor(step, total_steps: int, warmup_fraction: float, start: float, end: float):
    """Piecewise-linear multiplier: `start` -> 1 over the first `warmup_fraction` of steps, then 1 -> `end`."""
    import jax.numpy as jnp

    warmup = max(int(total_steps * warmup_fraction), 1)
    step = jnp.asarray(step, jnp.float32)
    rising = start + (1.0 - start) * step / warmup
    falling = 1.0 + (end - 1.0) * (step - warmup) / max(total_steps - warmup, 1)
    return jnp.where(step < warmup, rising, falling)


def make_optimizer(config, steps_per_epoch: int, total_steps: int):
    """Nesterov SGD per parameter group (`cnnjax.models.airbench.param_labels`), as the reference sets it up.

    The reference's decoupled hyperparameters become PyTorch-style SGD ones on
    the summed loss: step rate lr / (1024 (1 + 1 / (1 - momentum))), times the
    schedule, and an L2 term added to the gradient before momentum with
    coefficient decay / rate, where decay = weight_decay x batch /
    (1024 (1 + 1 / (1 - momentum))), so every group decays alike whatever its
    rate. BN biases step `bias_scaler` times faster; the whitening bias stops
    after `whiten.bias_epochs`; the frozen group (whitening kernel, BN scales)
    never moves.
    """
    import jax.numpy as jnp
    import optax

    from cnnjax.models import airbench

    opt = config.optimizer
    kilostep = 1024 * (1 + 1 / (1 - opt.momentum))
    rate = opt.learning_rate / kilostep
    decay = opt.weight_decay * config.batch_size / kilostep
    whiten_bias_steps = round(config.whiten.bias_epochs * steps_per_epoch)
    shape = functools.partial(lr_factor, total_steps=total_steps, warmup_fraction=config.schedule.warmup_fraction,
                              start=config.schedule.start, end=config.schedule.end)

    def sgd(group_rate: float, stop_step: int | None = None):
        def scale(count):
            value = -group_rate * shape(count)
            return value if stop_step is None else jnp.where(count < stop_step, value, 0.0)

        return optax.chain(optax.add_decayed_weights(decay / group_rate),
                           optax.trace(decay=opt.momentum, nesterov=True),
                           optax.scale_by_schedule(scale))

    transforms = {
        airbench.DEFAULT: sgd(rate),
        airbench.NORM_BIAS: sgd(rate * opt.bias_scaler),
        airbench.WHITEN_BIAS: sgd(rate, whiten_bias_steps),
        airbench.FROZEN: optax.set_to_zero(),
    }
    return optax.multi_transform(transforms, airbench.param_labels)
