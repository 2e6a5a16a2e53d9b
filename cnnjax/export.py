"""Loads a model written by `cnnjax --mode=export` with only jax and numpy.

    from cnnjax.export import load
    model = load("exported/")
    logits = model(images)          # uint8 (N, H, W, C), pixel values 0..255
    model.class_names[logits.argmax(-1)[0]]

This module imports nothing else of cnnjax (no flax, no model code), so the
directory can be served wherever jax runs; a copy of this file is enough.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

MODEL_FILE = "model.jaxexport"
METADATA_FILE = "metadata.json"


class ExportedModel:
    """An exported classifier: call it on uint8 NHWC images to get float32 logits.

    Attributes:
      class_names: class name of each logit.
      image_shape: (H, W, C) the model takes.
      metadata: the whole `metadata.json`.
    """

    def __init__(self, exported: Any, metadata: dict[str, Any]):
        self._exported = exported
        self.metadata = metadata
        self.class_names = tuple(metadata["class_names"])
        self.image_shape = tuple(metadata["input"]["shape"][1:])

    def __call__(self, images: Any) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(f"expected uint8 images of shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {images.dtype} {images.shape}")
        return np.asarray(self._exported.call(images))


def load(directory: str) -> ExportedModel:
    """Reads `model.jaxexport` and `metadata.json` from `directory`."""
    with open(os.path.join(directory, METADATA_FILE)) as f:
        metadata = json.load(f)
    with open(os.path.join(directory, MODEL_FILE), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    return ExportedModel(exported, metadata)
