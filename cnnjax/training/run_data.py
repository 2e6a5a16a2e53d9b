"""`data_info.json` in a run's workdir: what a trained model expects of its input.

Class names (in label order), the image shape and the normalisation statistics
of the training split, so evaluation and prediction on other data normalise as
training did without reloading the training set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from cnnjax.training import files
from cnnjax.training.writers import write_json

DATA_INFO = "data_info.json"


def data_info(name: str, class_names, image_shape, mean, std) -> dict[str, Any]:
    """The record written to `data_info.json`."""
    return {
        "name": name,
        "class_names": [str(c) for c in class_names],
        "image_shape": [int(d) for d in image_shape],
        "mean": np.asarray(mean, np.float32).tolist(),
        "std": np.asarray(std, np.float32).tolist(),
    }


def write_data_info(workdir: str, feed: Any, dataset: Any = None) -> None:
    """Writes the feed's data facts (class names from `dataset` or the feed) atomically."""
    class_names = getattr(dataset, "class_names", None) or getattr(feed, "class_names", None)
    if not class_names:
        class_names = [str(i) for i in range(feed.num_classes)]
    write_json(os.path.join(workdir, DATA_INFO), data_info(feed.name, class_names, feed.image_shape,
                                                           feed.mean, feed.std))


def read_data_info(workdir: str) -> dict[str, Any] | None:
    """The run's data facts (mean/std as float32 arrays), or None for a run that predates them."""
    path = os.path.join(workdir, DATA_INFO)
    if not files.exists(path):
        return None
    return parse_data_info(json.loads(files.read_text(path)))


def parse_data_info(info: dict[str, Any]) -> dict[str, Any]:
    """A `data_info` record with arrays and tuples in place of JSON lists."""
    return {**info, "mean": np.asarray(info["mean"], np.float32), "std": np.asarray(info["std"], np.float32),
            "image_shape": tuple(info["image_shape"]), "class_names": tuple(info["class_names"])}
