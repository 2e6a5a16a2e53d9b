"""Step time with the in-step monitors off and on (default config: LeNet-5, batch 64).

    python experiments/benchmarks/monitors.py [--steps=300] [--repeats=5]

Times, in ms per step (median over repeats of `steps` steps, after compiling; the
variants' repeats are interleaved):

- `plain`: `train_step(state, batch)`, called as before monitors existed (the
  script also checks that `monitor=None` traces the identical program);
- `monitors off`: what `train_and_evaluate` runs between monitored steps;
- `monitors on`: the monitored step (every step);
- `on every 25 steps`: the amortised cost at the babysit default.

Prints the figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

ROOT = Path(__file__).resolve().parents[2]


def _config():
    spec = importlib.util.spec_from_file_location("default_config", ROOT / "experiments" / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(None)


def _run(fn, state, batch, steps: int, monitored_every: int = 0, monitored=None):
    """Runs `steps` steps threading the state like the training loop; returns (state, seconds)."""
    start = time.perf_counter()
    for step in range(steps):
        if monitored is not None and step % monitored_every == 0:
            state, metrics = monitored(state, batch)
        else:
            state, metrics = fn(state, batch)
    jax.block_until_ready((state, metrics))
    return state, time.perf_counter() - start


def _interleaved(variants: dict, states: dict, batch, steps: int, repeats: int) -> dict[str, float]:
    """Median ms/step per variant; repeats alternate between variants so load drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, (fn, every, monitored) in variants.items():  # compile + warm up
        states[name], _ = _run(fn, states[name], batch, max(2, every), every, monitored)
    for _ in range(repeats):
        for name, (fn, every, monitored) in variants.items():
            states[name], seconds = _run(fn, states[name], batch, steps, every, monitored)
            times[name].append(seconds / steps * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from cnnjax.diagnostics.monitors import LayerMonitor
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.state import create_train_state
    from cnnjax.training.steps import train_step
    from cnnjax.training.train import build_model

    config = _config()
    model = build_model(config, 10)
    tx = optimizer_from_config(config, 62, 1860)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), (28, 28, 1))
    batch = {"image": jax.random.normal(jax.random.PRNGKey(1), (config.batch_size, 28, 28, 1)),
             "label": jnp.arange(config.batch_size) % 10}

    def plain(s, b):
        return train_step(s, b)

    same = str(jax.make_jaxpr(plain)(state, batch)) == str(jax.make_jaxpr(
        lambda s, b: train_step(s, b, monitor=None))(state, batch))
    plain_jit = jax.jit(plain, donate_argnums=0)
    off_jit = jax.jit(train_step, static_argnames="monitor", donate_argnums=0)
    on_jit = jax.jit(lambda s, b: train_step(s, b, monitor=LayerMonitor()), donate_argnums=0)
    copy = lambda: jax.tree_util.tree_map(jnp.copy, state)  # noqa: E731 (donation consumes states)

    off = lambda s, b: off_jit(s, b, monitor=None)  # noqa: E731
    variants = {
        "plain": (plain_jit, 0, None),
        "monitors off": (off, 0, None),
        "monitors on (every step)": (on_jit, 0, None),
        "monitors on every 25 steps": (plain_jit, 25, on_jit),
    }
    results = _interleaved(variants, {name: copy() for name in variants}, batch, args.steps, args.repeats)
    print(f"device: {jax.devices()[0].device_kind}, LeNet-5 batch {config.batch_size}, "
          f"{args.steps} steps x {args.repeats} repeats (median)")
    print(f"monitor=None traces the same program as the plain step: {same}")
    for name, ms in results.items():
        print(f"  {name:28s} {ms:7.3f} ms/step  ({(ms / results['plain'] - 1) * 100:+.1f}% vs plain)")


if __name__ == "__main__":
    main()
