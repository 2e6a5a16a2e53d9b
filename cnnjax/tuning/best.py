"""The sweep's best members as ordinary run workdirs: `WORKDIR/best/<member>/`.

While the sweep runs, the state of each member among the current best
`sweep.keep_best` (on validation accuracy) is saved at the end of each of its
phases as a single run's checkpoint; members that drop out lose theirs. At the
end each kept member gets `config.json` (the sweep's config with the member's
values) and `summary.json` with its test-split `eval/accuracy`, so a run command
with that config resumes or extends it. Test accuracy is reported for these
members only: choosing on it would leak the test split into the choice.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import jax
from absl import logging

from cnnjax.training import files
from cnnjax.training.checkpoint import Checkpointer
from cnnjax.training.sharding import replicate
from cnnjax.training.writers import write_json


def score(rec) -> float:
    """Validation accuracy for ranking; a diverged member ranks last."""
    return -1.0 if rec.diverged or not math.isfinite(rec.best_val_accuracy) else rec.best_val_accuracy


def _top(sweep) -> list[int]:
    ranked = sorted(sweep.records.values(), key=lambda r: (-score(r), r.member))
    return [r.member for r in ranked[: sweep.config.sweep.keep_best] if score(r) >= 0]


def keep_candidates(sweep, pop) -> None:
    """After a phase: saves the states of `pop`'s members among the current best; drops the others'."""
    if not sweep.workdir or not sweep.config.sweep.keep_best or not sweep.phases.checkpointer:
        return
    root = os.path.join(sweep.workdir, "best")
    top = set(_top(sweep))
    if sweep.primary and files.isdir(root):
        for name in files.listdir(root):
            if name.isdigit() and int(name) not in top:
                files.rmtree(os.path.join(root, name))
    for i, member in enumerate(pop.ids):
        if member in top:
            state = jax.tree_util.tree_map(lambda x, i=i: x[i], pop.state)
            # A single run carries its dropout rate in the model itself, not in the state.
            # (Every process saves: orbax writes each array once, from the process holding it.)
            checkpointer = Checkpointer(os.path.join(root, str(member)), keep=1)
            checkpointer.save(state.replace(model_hparams={}))
            checkpointer.close()


def write_best_runs(sweep) -> list[dict[str, Any]]:
    """Completes `best/<member>/` of the final best members: config.json, summary.json (test accuracy)."""
    from cnnjax.training.feeds import InMemoryFeed, member_keys
    from cnnjax.training.loop import Schedule
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.state import count_params, create_train_state
    from cnnjax.training.train import build_model, config_as_json
    from cnnjax.tuning.population import member_config

    if not sweep.config.sweep.keep_best:
        return []
    dataset, out = sweep.dataset, []
    for member in _top(sweep):
        workdir = os.path.join(sweep.workdir, "best", str(member))
        rec = sweep.records[member]
        if not files.isdir(os.path.join(workdir, "checkpoints")):
            logging.warning("member %d has no saved state (it ranked lower when it finished); not kept", member)
            continue
        config = member_config(sweep.config, rec.values)
        schedule = Schedule.from_config(config, dataset.train.num_examples)
        init_key, data_key = member_keys(config.seed, config.get("data_seed"))
        state = create_train_state(
            build_model(config, dataset.num_classes), optimizer_from_config(config, schedule.steps_per_epoch,
                                                                            schedule.total_steps),
            init_key, tuple(dataset.image_shape), l2=config.loss.l2, l1=config.loss.l1,
            label_smoothing=config.loss.label_smoothing, precision=config.precision)
        checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
        if jax.process_count() > 1:
            # Every process restores (orbax reads together) into arrays replicated over all devices;
            # process 0 then evaluates on its own devices and writes.
            state = jax.device_get(checkpointer.restore(replicate(state, _global_mesh())))
        else:
            state = checkpointer.restore(state)
        checkpointer.close()
        if not sweep.primary:
            continue
        feed = InMemoryFeed(config, dataset, None, data_key)
        summary: dict[str, Any] = {
            "status": "completed", "member": member, "values": rec.values, "steps": int(state.step),
            "epochs": int(state.step) / schedule.steps_per_epoch, "num_params": count_params(state.params),
            "model": config.model.name, "dataset": feed.name, "train/loss": rec.train_loss,
            "train/accuracy": rec.train_accuracy, "wall_time_s": time.time() - sweep.start_time,
        }
        for name in feed.eval_splits:
            summary.update({f"{name}/{k}": v for k, v in feed.evaluate(state, name).items()})
        if "eval/accuracy" in summary:
            rec.extra["test_accuracy"] = summary["eval/accuracy"]
        write_json(os.path.join(workdir, "config.json"), config_as_json(config))
        write_json(os.path.join(workdir, "summary.json"), summary)
        out.append({"member": member, "workdir": workdir, "test_accuracy": summary.get("eval/accuracy")})
    return out


def _global_mesh():
    """A one-axis mesh over every device of every process."""
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()), ("all",))
