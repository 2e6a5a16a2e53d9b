"""Checkpoints with orbax: periodic, atomic (orbax writes to a temporary
directory and renames it), keeping the last N."""

from __future__ import annotations

import os
from typing import Any

import flax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores a `TrainState` (its array leaves) under `workdir/checkpoints`."""

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, state: Any) -> None:
        """Saves `state` at its own step and waits, so the file is complete on return."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)))
        self._manager.wait_until_finished()

    def restore(self, state: Any, step: int | None = None) -> Any:
        """Returns `state` with its leaves replaced by checkpoint `step` (latest if None)."""
        step = self.latest_step() if step is None else step
        target = flax.serialization.to_state_dict(state)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return flax.serialization.from_state_dict(state, restored)

    def close(self) -> None:
        self._manager.close()
