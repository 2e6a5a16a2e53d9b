"""Execution plans: how the member step is mapped over the population axis.

- `vmap`: all members in one batched program. Per-member convolutions would
  become grouped convolutions, slow on CPU and GPU alike; `members_batched`
  marks the step so that `conv_impl=auto` lowers them to batched matmuls
  instead. Still not always the fastest plan (memory traffic grows with P).
- `chunked`: `lax.map` over chunks of `chunk_size` members, each chunk vmapped.
- `sequential`: `lax.map` one member at a time, still one compiled program.
- Under a device mesh (axis `member`), each device runs the plan over its own
  members (`shard_map`): no member crosses devices and nothing is communicated
  during a step, so e.g. `sequential` on 8 devices runs 8 members at a time.
- `auto`: compiles candidates (sequential, chunks of 2, 4, 8, ... members,
  vmap), estimates each one's memory from the compiled program, times a few
  steps on the actual device and keeps the fastest that fits. It measures both
  ends first and walks inward from the faster one until a candidate is no
  faster, so it rarely compiles them all. With several processes every one
  takes process 0's free memory and timings, so all pick the same plan.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.kernels.conv import members_batched
from cnnjax.training.sharding import from_process_0

PLAN_CHOICES = ("auto", "vmap", "chunked", "sequential")


class PlanError(RuntimeError):
    """No execution plan fits in memory (the message has the numbers)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    chunk_size: int | None = None

    def __str__(self) -> str:
        return f"chunked({self.chunk_size})" if self.name == "chunked" else self.name


@dataclasses.dataclass
class Trial:
    plan: Plan
    step_ms: float | None
    memory_bytes: int | None
    fits: bool
    note: str = ""
    picked: bool = False


def map_members(member_step: Callable, plan: Plan, shared_batches: bool) -> Callable:
    """`population_step(state, alive, data_keys, permutations, index, images, labels)`.

    Returns (state, alive, metrics) with a leading member axis everywhere.
    """
    perm_axis = None if shared_batches else 0
    if plan.name == "vmap":
        return members_batched(jax.vmap(member_step, in_axes=(0, 0, 0, perm_axis, None, None, None)))

    batch_size = plan.chunk_size if plan.name == "chunked" else None

    def population_step(state, alive, data_keys, permutations, index, images, labels):
        def one(xs):
            if shared_batches:
                member_state, member_alive, key = xs
                permutation = permutations
            else:
                member_state, member_alive, key, permutation = xs
            return member_step(member_state, member_alive, key, permutation, index, images, labels)

        xs = (state, alive, data_keys) if shared_batches else (state, alive, data_keys, permutations)
        return lax.map(one, xs, batch_size=batch_size)

    # Chunks are vmapped inside the map; `sequential` maps single members (kernels unbatched).
    return members_batched(population_step) if batch_size else population_step


def shard_members(population_step: Callable, mesh: Any, shared_batches: bool) -> Callable:
    """Runs `population_step` on each device's slice of the member axis of `mesh`."""
    from jax.sharding import PartitionSpec as P

    member = P("member")
    in_specs = (member, member, member, P() if shared_batches else member, P(), P(), P())
    return jax.shard_map(population_step, mesh=mesh, in_specs=in_specs, out_specs=member, check_vma=False)


def candidate_plans(population_size: int) -> list[Plan]:
    """`auto`'s candidates, by members per inner step: sequential, chunks of 2, 4, 8, ..., vmap."""
    if population_size <= 1:
        return [Plan("vmap")]
    chunks = [c for c in (2 ** k for k in range(1, population_size.bit_length())) if c < population_size]
    return [Plan("sequential"), *(Plan("chunked", c) for c in chunks), Plan("vmap")]


def walk_inward(inner: list[Plan], low_ms: float | None, high_ms: float | None,
                measure: Callable[[Plan], float | None]) -> None:
    """`auto`'s search between the ends of the ladder.

    Candidates are ordered by members per inner step: sequential (1), chunks of
    2, 4, ..., vmap (all). With both ends measured (`low_ms`, `high_ms`; None
    where a program does not fit), the search walks `inner` from the faster end
    and stops at the first candidate that is no faster than the best so far or
    that does not fit (`measure` returns None): the step time is taken to have
    one minimum along the ladder, falling while bigger chunks use idle
    parallelism and rising once memory traffic dominates.
    """
    ends = [(ms, side) for ms, side in ((low_ms, 0), (high_ms, 1)) if ms is not None]
    if not ends:
        return
    best_ms, side = min(ends)
    for plan in inner[::-1] if side == 1 else inner:
        ms = measure(plan)
        if ms is None or ms >= best_ms:
            return
        best_ms = ms


def available_memory_bytes(device: Any | None = None) -> int | None:
    """Free memory of the device (accelerator) or of the host (CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # CPU devices may not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def compiled_memory_bytes(compiled: Any) -> int | None:
    """Peak-memory estimate of a compiled program: arguments + outputs + temporaries - aliased."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:
        return None
    if analysis is None:
        return None
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - getattr(analysis, "alias_size_in_bytes", 0)
    )


def _copy(tree):
    return jax.tree_util.tree_map(jnp.copy, tree)


def choose_plan(
    member_step: Callable,
    args: tuple,
    requested: str = "auto",
    chunk_size: int | None = None,
    shared_batches: bool = False,
    trial_steps: int = 3,
    trial_rounds: int = 3,
    memory_limit_bytes: int | None = None,
    mesh: Any = None,
) -> tuple[Plan, Callable, list[Trial]]:
    """Picks and compiles the population step.

    Args:
      member_step: see `cnnjax.tuning.population.make_member_step`.
      args: example arguments (state, alive, data_keys, permutations, index,
        images, labels) for compiling and timing.
      requested: one of `PLAN_CHOICES`.
      chunk_size: for `chunked`.
      trial_steps / trial_rounds: `auto` times blocks of `trial_steps` steps:
        one per candidate during the search, then `trial_rounds - 1` more
        rounds of every measured candidate, taking turns; each keeps its
        fastest block.
      memory_limit_bytes: defaults to the device's free memory.
      mesh: optional `jax.sharding.Mesh` with a `member` axis; the plan then
        applies to each device's members (args must be sharded accordingly).

    Returns:
      (plan, jitted step with the state donated, trials measured).
    """
    if requested not in PLAN_CHOICES:
        raise ValueError(f"Unknown plan {requested!r}; valid choices: {', '.join(PLAN_CHOICES)}")
    population_size = int(args[1].shape[0])
    local_size = population_size // (mesh.size if mesh is not None else 1)
    limit = memory_limit_bytes if memory_limit_bytes is not None else available_memory_bytes()
    # Several processes run one program: all of them follow process 0's memory and timings.
    limit = from_process_0(limit)
    if requested == "auto":
        candidates = candidate_plans(local_size)
    elif requested == "chunked":
        candidates = [Plan("chunked", chunk_size or max(1, local_size // 4))]
    else:
        candidates = [Plan(requested)]

    trials: list[Trial] = []
    compiled_steps = {}

    def compile_plan(plan: Plan) -> Trial:
        step = map_members(member_step, plan, shared_batches)
        if mesh is not None:
            step = shard_members(step, mesh, shared_batches)
        compiled = jax.jit(step, donate_argnums=(0,)).lower(*args).compile()
        memory = compiled_memory_bytes(compiled)
        trial = Trial(plan, None, memory, memory is None or limit is None or memory <= limit)
        trials.append(trial)
        if trial.fits:
            compiled_steps[plan] = compiled
        else:
            trial.note = "does not fit"
        return trial

    def time_block(trial: Trial) -> None:
        fn = compiled_steps[trial.plan]
        # One copy of the (donated) state per block, outside the clock: copying
        # it per step costs a dispatch per leaf, as much as a small model's step.
        state = jax.block_until_ready(_copy(args[0]))
        t0 = time.perf_counter()
        for _ in range(trial_steps):
            state, _, out = fn(state, *args[1:])
        jax.block_until_ready(out)
        ms = from_process_0((time.perf_counter() - t0) / trial_steps * 1000)
        trial.step_ms = ms if trial.step_ms is None else min(trial.step_ms, ms)

    def warm_up(trial: Trial) -> None:
        jax.block_until_ready(compiled_steps[trial.plan](_copy(args[0]), *args[1:]))

    def measure_ms(plan: Plan) -> float | None:
        trial = compile_plan(plan)
        if not trial.fits:
            return None
        warm_up(trial)
        time_block(trial)
        return trial.step_ms

    if len(candidates) == 1:
        compile_plan(candidates[0])
    else:
        # Both ends of the ladder first (warmed up before either is timed), then
        # inward from the faster one.
        ends = [t for t in (compile_plan(candidates[0]), compile_plan(candidates[-1])) if t.fits]
        for trial in ends:
            warm_up(trial)
        for trial in ends:
            time_block(trial)
        walk_inward(candidates[1:-1], trials[0].step_ms, trials[1].step_ms, measure_ms)
        # The measured candidates take turns for the remaining rounds and each
        # keeps its best round: a burst of load from elsewhere on the machine
        # then slows one round, not one candidate's only measurement.
        for _ in range(trial_rounds - 1):
            for trial in trials:
                if trial.fits:
                    time_block(trial)

    fitting = [t for t in trials if t.fits]
    if not fitting:
        lines = "; ".join(f"{t.plan}: {t.memory_bytes / 2**20:.0f} MiB" for t in trials if t.memory_bytes)
        raise PlanError(
            f"No execution plan for {population_size} members fits in "
            f"{(limit or 0) / 2**20:.0f} MiB of memory ({lines}). Use a smaller population "
            "(sweep.population_size), plan='chunked' with a smaller sweep.chunk_size, or a smaller batch."
        )
    best = min(fitting, key=lambda t: t.step_ms if t.step_ms is not None else 0.0)
    best.picked = True
    return best.plan, compiled_steps[best.plan], trials
