"""A sweep as TensorBoard runs: one run per member, with the HParams dashboard.

`tensorboard --logdir WORKDIR/tensorboard` lists `member_0000`, `member_0001`, ...
each with its train/val curves, and the HParams tab relates every member's
hyperparameters to its best and final validation accuracy.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

from cnnjax.training import files


def _hparam_value(value: Any) -> bool | str | float | int:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def write_member_runs(workdir: str, records: Iterable[Any], space_paths: Iterable[str]) -> str:
    """Writes one TensorBoard run per member under `workdir/tensorboard`; returns that folder.

    The folder is rebuilt from the records each time, so a resumed sweep that
    writes it again leaves each member's run once.
    """
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams

    root = os.path.join(workdir, "tensorboard")
    files.rmtree(root)
    paths = list(space_paths)
    for rec in records:
        run = os.path.join(root, f"member_{rec.member:04d}")
        writer = SummaryWriter(logdir=run)
        try:
            for step, loss, accuracy in rec.train_history:
                writer.add_scalar("train/loss", loss, step)
                writer.add_scalar("train/accuracy", accuracy, step)
            for step, accuracy in rec.val_history:
                writer.add_scalar("val/accuracy", accuracy, step)
            hp = {p: _hparam_value(rec.values[p]) for p in paths if p in rec.values}
            metrics = {
                "hparams/best_val_accuracy": rec.best_val_accuracy if math.isfinite(rec.best_val_accuracy) else 0.0,
                "hparams/final_val_accuracy": rec.val_accuracy if math.isfinite(rec.val_accuracy) else 0.0,
                "hparams/diverged": float(rec.diverged),
            }
            for summary in hparams(hp, metrics):
                writer.file_writer.add_summary(summary)
            last_step = rec.val_history[-1][0] if rec.val_history else rec.steps
            for key, value in metrics.items():
                writer.add_scalar(key, value, last_step)
        finally:
            writer.close()
    return root
