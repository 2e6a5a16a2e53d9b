"""Checkpoints with orbax: periodic, atomic (orbax writes to a temporary
directory and renames it), keeping the last N.

A checkpoint that cannot be read back (its files damaged after the rename) is
moved aside to `checkpoints-unreadable/` and the previous one is used, with a
log line saying so. A save cut short by a kill leaves only orbax's temporary
directory, which orbax ignores (and removes). In a bucket (`gs://`), where
nothing can be renamed, orbax writes the step's directory in place and marks it
complete with a `commit_success.txt` written last; a step without it is ignored.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import flax
import orbax.checkpoint as ocp
from absl import logging

from cnnjax.training import files


class NoReadableCheckpointError(RuntimeError):
    """Every checkpoint in the directory failed to restore."""


class Checkpointer:
    """Saves and restores a pytree (e.g. a `TrainState`, its array leaves) under `workdir/checkpoints`.

    `save(state)` / `restore(state)` write a single run's format (one item);
    `save(tree, step=, meta=)` adds a JSON item `meta` next to the arrays, in
    the same atomic checkpoint (a sweep's records and strategy state).
    """

    def __init__(self, workdir: str, keep: int = 3):
        self.directory = os.path.join(files.absolute(workdir), "checkpoints")
        if files.is_remote(self.directory):
            files.prepare_remote()
        self._keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            # In a bucket a save cut short leaves its step directory unmarked: orbax ignores it, and
            # deletes it when the manager opens (process 0 only), so a new save of that step starts clean.
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                                 cleanup_tmp_directories=files.is_remote(self.directory)),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: Any, step: int | None = None, meta: dict[str, Any] | None = None) -> None:
        """Saves `state` at `step` (default: its own `.step`) and waits, so the files are complete on return."""
        step = int(state.step) if step is None else int(step)
        if step in self._manager.all_steps():
            return
        tree = flax.serialization.to_state_dict(state)
        if meta is None:
            args = ocp.args.StandardSave(tree)
        else:
            # Stored as one string: JSON with NaN survives, and the arrays and the records stay one checkpoint.
            args = ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                      meta=ocp.args.JsonSave({"json": json.dumps(meta)}))
        self._manager.save(step, args=args)
        self._manager.wait_until_finished()

    def restore(self, state: Any, step: int | None = None, with_meta: bool = False) -> Any:
        """Returns `state` with its leaves replaced by checkpoint `step` (default: the latest readable one).

        With `with_meta`, returns (state, meta) of a checkpoint saved with `meta`.
        """
        target = flax.serialization.to_state_dict(state)

        def read(s):
            if not with_meta:
                return self._manager.restore(s, args=ocp.args.StandardRestore(target)), None
            out = self._manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                   meta=ocp.args.JsonRestore()))
            return out["state"], json.loads(out["meta"]["json"])

        if step is None:
            _, (tree, meta) = self.first_readable(read)
        else:
            tree, meta = read(step)
        restored = flax.serialization.from_state_dict(state, tree)
        return (restored, meta) if with_meta else restored

    def read_meta(self) -> tuple[int, dict[str, Any]] | None:
        """(step, meta) of the latest readable checkpoint (arrays checked too), or None if there is none."""
        if self.latest_step() is None:
            return None

        def read(s):
            out = self._manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                                   meta=ocp.args.JsonRestore()))
            return json.loads(out["meta"]["json"])

        return self.first_readable(read)

    def first_readable(self, read: Callable[[int], Any]) -> tuple[int, Any]:
        """`read(step)` of the newest checkpoint it succeeds on; unreadable newer ones are moved aside."""
        for step in reversed(self.all_steps()):
            try:
                return step, read(step)
            except Exception as err:  # noqa: BLE001 (any failure to read means: not usable)
                aside = os.path.join(self.directory + "-unreadable", str(step))
                message = (f"Checkpoint {step} in {self.directory} is unreadable ({type(err).__name__}: "
                           f"{str(err).splitlines()[0][:200] if str(err) else ''}); moved to {aside}, "
                           "using the previous one.")
                logging.warning(message)
                print(message, flush=True)
                self._set_aside(step, aside)
        raise NoReadableCheckpointError(f"No readable checkpoint in {self.directory}")

    def _set_aside(self, step: int, aside: str) -> None:
        self._manager.close()
        files.makedirs(os.path.dirname(aside))
        if files.exists(aside):
            files.rmtree(aside)
        files.rename_tree(os.path.join(self.directory, str(step)), aside)
        self._manager = self._open()

    def close(self) -> None:
        self._manager.close()
