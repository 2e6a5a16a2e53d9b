"""The CLI's `--mode=eval|predict|export`: checks the mode's flags, runs it, prints one summary line."""

from __future__ import annotations

import json
import os

import ml_collections

from cnnjax.inference.restore import InferenceError
from cnnjax.inference.run_config import read_run_config
from cnnjax.training import files

# What an evaluation may change; the rest describes the trained model and must stay.
OVERRIDABLE = ("data.", "eval_batch_size")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_overrides(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Refuses `--config.*` overrides outside `data.*` and `eval_batch_size`."""
    if not files.exists(os.path.join(workdir, "config.json")):
        return  # restore_run names the problem
    run = _flat(json.loads(read_run_config(workdir).to_json_best_effort()))
    new = _flat(json.loads(config.to_json_best_effort()))
    changed = sorted(k for k in set(run) | set(new) if run.get(k) != new.get(k) and not k.startswith(OVERRIDABLE))
    if changed:
        raise InferenceError(f"Only --config.data.* and --config.eval_batch_size can be overridden for a trained "
                             f"run; got {', '.join(changed)}.")


def run_mode(mode: str, workdir: str, config: ml_collections.ConfigDict, *, step: int | None = None,
             images: str | None = None, predictions: str | None = None, export_dir: str | None = None) -> None:
    """Runs `mode` on the trained run in `workdir` (config: its config.json plus overrides)."""
    check_overrides(workdir, config)
    if mode == "eval":
        from cnnjax.inference.evaluate import evaluate_run

        result = evaluate_run(workdir, config, step)
        top5 = f", top5_accuracy={result['top5_accuracy']:.4f}" if "top5_accuracy" in result else ""
        print(f"Eval: accuracy={result['accuracy']:.4f}, loss={result['loss']:.4f}{top5} on "
              f"{result['num_examples']} examples of {config.data.name} (checkpoint step "
              f"{result['checkpoint_step']}); see {os.path.join(workdir, 'eval.json')}")
    elif mode == "predict":
        if not images:
            raise InferenceError("--mode=predict needs --images=PATH (an image file, a folder or a .tar.gz).")
        from cnnjax.inference.predict import predict_run

        out = predictions or os.path.join(workdir, "predictions.csv")
        result = predict_run(workdir, config, images, out, step)
        print(f"Predict: {result['predicted']} images labelled, {result['skipped']} unreadable skipped; "
              f"wrote {out}")
    elif mode == "export":
        if not export_dir:
            raise InferenceError("--mode=export needs --export_dir=DIR.")
        from cnnjax.inference.export_model import export_run

        result = export_run(workdir, config, export_dir, step)
        print(f"Export: {config.model.name} at checkpoint step {result['checkpoint_step']} written to "
              f"{export_dir}; load it with cnnjax.export.load({export_dir!r})")
    else:
        raise ValueError(f"not an inference mode: {mode!r}")
