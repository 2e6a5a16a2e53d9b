"""`--mode=eval`: a run's checkpoint scored on one split of any data set.

Writes `RUN/eval.json` and `RUN/confusion_matrix.png` (both temp file + rename)
and nothing else; every check (workdir, checkpoint, data, class names, image
shape) runs before the first write. An image folder is decoded chunk by chunk
while the forward passes of earlier chunks run (`eval_data.py`), so an
undecodable image is reported once its chunk is reached, still before any write.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
import numpy as np

from cnnjax.inference.confusion_plot import save_confusion_matrix
from cnnjax.inference.eval_data import data_source, open_eval_images
from cnnjax.inference.restore import InferenceError, restore_run
from cnnjax.training.writers import write_json


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
    data = open_eval_images(run, config.data)
    batch_size = config.eval_batch_size
    run.prepare(batch_size, data.num_examples)  # compiles while the first images are decoded
    labels = []

    def chunks():
        for images, chunk_labels in data.chunks(run.chunk_size(batch_size, data.num_examples)):
            labels.append(chunk_labels)
            yield images

    logits = run.logits_of_chunks(chunks(), batch_size, data.num_examples)
    if not len(logits):
        raise InferenceError(f"None of the {data.num_examples} images of {data_source(config.data)} could be "
                             "decoded; nothing written.")
    labels = np.concatenate(labels)
    metrics = classification_metrics(logits, labels, run.class_names)
    confusion = metrics.pop("confusion_matrix")
    record = {
        **metrics,
        "checkpoint_step": run.step,
        "ema_weights": run.ema,
        "split": "test",
        "data": json.loads(config.data.to_json_best_effort(sort_keys=True)),
    }
    if data.skipped:  # data.bad_images=skip left undecodable images out
        record["skipped_images"] = data.skipped
    write_json(os.path.join(workdir, "eval.json"), record)
    save_confusion_matrix(os.path.join(workdir, "confusion_matrix.png"), confusion, run.class_names,
                          f"{config.model.name} step {run.step} on {config.data.name} "
                          f"(accuracy {metrics['accuracy']:.4f})")
    return record
