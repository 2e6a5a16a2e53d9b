"""The speed run's data: CIFAR-10 JPEGs decoded once into uint8 arrays (optionally cached as .npz)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from experiments import common


@dataclasses.dataclass(frozen=True)
class SpeedrunData:
    """uint8 NHWC images and int32 labels of both splits, and the train split's channel mean/std in [0, 1]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_classes: int


def _data_key(config, path) -> str:
    d = config.data
    return json.dumps({"path": os.path.abspath(str(path)), "validation_fraction": d.validation_fraction,
                       "max_train_examples": d.max_train_examples, "max_eval_examples": d.max_eval_examples},
                      sort_keys=True)


def load_data(config, data_path: str | None = None, cache: str | None = None) -> SpeedrunData:
    """Train/validation splits carved from the CIFAR-10 JPEG archive (`cnnjax.data.load_dataset`, no TFDS).

    The validation split is `data.validation_fraction` of every class of the
    archive's 50,000 training images (fixed seed), the rest is training data;
    `data.max_*_examples` take fixed stratified subsets of each. `cache`
    (an .npz path) stores the decoded arrays on first use and reads them after.
    """
    path = Path(data_path or config.data.path or common.find_cifar_archive())
    key = _data_key(config, path)
    if cache and os.path.exists(cache):
        with np.load(cache) as stored:
            if str(stored["key"]) == key:
                arrays = {name: stored[name] for name in stored.files if name != "key"}
                return SpeedrunData(**{k: v for k, v in arrays.items() if k != "num_classes"},
                                    num_classes=int(arrays["num_classes"]))
            print(f"data cache {cache} was made for other data settings; decoding again")
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 JPEG archive not found at {path}; pass --data_path=PATH "
                                "(a .tar.gz or folder laid out as train/<class>/<image>)")
    import ml_collections

    wrapper = ml_collections.ConfigDict()
    wrapper.data = ml_collections.ConfigDict(dict(
        name="image_folder", path=str(path), validation_fraction=float(config.data.validation_fraction),
        test_fraction=0.0, max_train_examples=config.data.max_train_examples,
        max_eval_examples=config.data.max_eval_examples, preprocess="standardize"))
    dataset = common.load(wrapper)
    data = SpeedrunData(
        train_images=dataset.train.images, train_labels=dataset.train.labels.astype(np.int32),
        val_images=dataset.validation.images, val_labels=dataset.validation.labels.astype(np.int32),
        mean=np.asarray(dataset.mean, np.float32).reshape(-1), std=np.asarray(dataset.std, np.float32).reshape(-1),
        num_classes=dataset.num_classes)
    if cache:
        np.savez(cache, key=np.array(key), num_classes=np.array(data.num_classes),
                 **{f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name != "num_classes"})
    return data
