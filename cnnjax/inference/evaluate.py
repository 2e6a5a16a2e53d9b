"""`--mode=eval`: a run's checkpoint scored on one split of any data set.

Writes `RUN/eval.json` and `RUN/confusion_matrix.png` (both temp file + rename)
and nothing else; every check (workdir, checkpoint, data, class names, image
shape) runs before the first write.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from cnnjax.inference.restore import InferenceError, RestoredRun, convert_images, restore_run
from cnnjax.training.writers import save_figure, write_json


def _data_source(data: ml_collections.ConfigDict) -> str:
    return f"data.name={data.name}" + (f" (data.path={data.path})" if data.get("path") else "")


def load_eval_data(run: RestoredRun, data: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """The test split of `data` as the run's input: converted images and labels in the run's class order."""
    from cnnjax.data.one_split import load_one_split

    try:
        images, names = load_one_split(data, "test")
    except (FileNotFoundError, ValueError) as err:
        raise InferenceError(f"Cannot load the evaluation data ({_data_source(data)}): {err}") from None
    index = {name: i for i, name in enumerate(run.class_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise InferenceError(
            f"{_data_source(data)} has classes the run was not trained on: {', '.join(unknown)}. "
            f"The run's classes are: {', '.join(run.class_names)}.")
    labels = np.array([index[n] for n in names], np.int32)
    return convert_images(images, run.image_shape, _data_source(data)), labels


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, top-5 (over 5 classes), per-class accuracy and the confusion matrix."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    predicted = logits.argmax(axis=1)
    num_classes = len(class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    metrics: dict[str, Any] = {
        "accuracy": float(np.mean(predicted == labels)),
        "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
        "num_examples": int(len(labels)),
    }
    if num_classes > 5:
        top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        metrics["top5_accuracy"] = float(np.mean((top5 == labels[:, None]).any(axis=1)))
    per_class = confusion.sum(axis=1)
    # Classes absent from the data have no accuracy (null), not 0.
    metrics["per_class_accuracy"] = {
        name: (float(confusion[i, i] / per_class[i]) if per_class[i] else None) for i, name in enumerate(class_names)
    }
    metrics["confusion_matrix"] = confusion
    return metrics


def save_confusion_matrix(path: str, confusion: np.ndarray, class_names, title: str) -> None:
    """A row-normalised confusion-matrix heat map (PNG, temp file + rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    normalised = confusion / np.maximum(rows, 1)
    size = min(4 + 0.4 * len(class_names), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if len(class_names) <= 30:
        ticks = np.arange(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90)
        ax.set_yticks(ticks, class_names)
        if len(class_names) <= 12:
            for i, j in zip(*np.nonzero(confusion)):
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def evaluate_run(workdir: str, config: ml_collections.ConfigDict, step: int | None = None) -> dict[str, Any]:
    """Scores `workdir`'s checkpoint on `config.data`'s test split; writes eval.json and the plot.

    Args:
      workdir: the training run.
      config: the run's config with any `data.*` overrides.
      step: checkpoint step (latest if None).

    Returns:
      The `eval.json` record.
    """
    run = restore_run(workdir, config, step)
    images, labels = load_eval_data(run, config.data)
    logits = run.predict_logits(images, config.eval_batch_size)
    metrics = classification_metrics(logits, labels, run.class_names)
    confusion = metrics.pop("confusion_matrix")
    record = {
        **metrics,
        "checkpoint_step": run.step,
        "ema_weights": run.ema,
        "split": "test",
        "data": json.loads(config.data.to_json_best_effort(sort_keys=True)),
    }
    write_json(os.path.join(workdir, "eval.json"), record)
    save_confusion_matrix(os.path.join(workdir, "confusion_matrix.png"), confusion, run.class_names,
                          f"{config.model.name} step {run.step} on {config.data.name} "
                          f"(accuracy {metrics['accuracy']:.4f})")
    return record
