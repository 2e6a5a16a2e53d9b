"""`profile_steps="A,B"`: a `jax.profiler` trace of training steps A..B in the workdir.

The trace lands in `WORKDIR/plugins/profile/<timestamp>/`, where TensorBoard's
profile plugin (`pip install tensorboard-plugin-profile`, then
`tensorboard --logdir=WORKDIR`) finds it. Steps count from 1, as in
`metrics.jsonl`; steps A..B should lie after the first (compiling) step to show
the steady state. A sweep traces its population's steps A..B the same way,
once: the first population (phase) that reaches step A.
"""

from __future__ import annotations

from typing import Any


def parse_profile_steps(spec: str) -> tuple[int, int] | None:
    """`"A,B"` -> (A, B) with 1 <= A <= B; `""` -> None (no profiling).

    Raises:
      ValueError: anything else, with the expected form.
    """
    if not spec:
        return None
    parts = [p.strip() for p in str(spec).split(",")]
    try:
        first, last = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        first = last = None
    if first is None or not 1 <= first <= last:
        raise ValueError(f"profile_steps={spec!r} must be 'A,B' with 1 <= A <= B (training steps, from 1)")
    return first, last


class StepProfiler:
    """Starts a trace before step A and stops it once step B has finished.

    `at(step, state)` is the loop's one hook: call it before each step with the
    number of steps done and the current state (blocked on when the trace stops,
    so step B's work is inside it). `close()` stops a trace the loop left open.
    One trace at most: a sweep's later populations, which count their steps
    from 0 again, are not traced.
    """

    def __init__(self, spec: str, workdir: str):
        self.window = parse_profile_steps(spec)
        self.workdir = workdir
        self.active = False

    def at(self, steps_done: int, state: Any = None) -> None:
        if self.window is None:
            return
        first, last = self.window
        if not self.active and steps_done == first - 1:
            import jax

            jax.profiler.start_trace(self.workdir)
            self.active = True
        elif self.active and steps_done >= last:
            self.close(state)

    def steps_before_change(self, steps_done: int) -> int | None:
        """Steps the loop may run before `at` must see it again (the window's next edge), or None (no edge ahead)."""
        if self.window is None:
            return None
        first, last = self.window
        edge = last if self.active else first - 1
        return edge - steps_done if edge > steps_done else None

    def close(self, state: Any = None) -> None:
        if not self.active:
            return
        import jax

        try:
            if state is not None:
                jax.block_until_ready(state)
        except Exception:  # noqa: BLE001 (a failed step's donated state: stop the trace anyway)
            pass
        jax.profiler.stop_trace()
        self.active = False
        self.window = None  # traced once
