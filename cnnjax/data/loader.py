"""Config-driven entry point: ``load_dataset(config.data) -> Dataset``.

Config keys (read with defaults, so a config holding only ``name`` works):

==================== ========= ==============================================
key                  default   meaning
==================== ========= ==============================================
name                 required  ``mnist5k``, ``digits``, ``image_folder`` or a
                               TFDS name (``mnist``, ``fashion_mnist``,
                               ``cifar10``, ``cifar100``, ...)
data_dir             None      TFDS data directory (None: TFDS default)
download             False     allow TFDS to download a missing named set
path                 None      image folder directory or tarball
train_split          None      TFDS split string override (None: default)
validation_split     None      same, for validation
test_split           None      same, for test
max_train_examples   None      fixed seeded stratified train subset size
max_eval_examples    None      same, for validation and for test
validation_fraction  0.1       image folders without a validation split
test_fraction        0.1       image folders without a test split
preprocess           'none'    one of ``PREPROCESS_CHOICES``
bad_images           'error'   image folders: ``error`` on an undecodable
                               image, or ``skip`` it (``Dataset.skipped_images``)
==================== ========= ==============================================

Only the TFDS path imports TensorFlow, and only when called.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from absl import logging

from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import IMAGE_FOLDER, load_image_folder
from cnnjax.data.preprocess import compute_preprocess_stats
from cnnjax.data.splits import DEFAULT_SEED, SPLIT_NAMES, stratified_subset
from cnnjax.data.tfds_loader import NAMED_DATASETS, OFFLINE_DATASETS, load_tfds


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split held in memory.

    Attributes:
      images: uint8 images, shape (N, H, W, C).
      labels: int32 class indices, shape (N,).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}.")
        if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(
                f"labels must be int32 of shape ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}."
            )

    @property
    def num_examples(self) -> int:
        """Number of examples in the split."""
        return int(self.images.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A fully loaded dataset with its train-split normalisation statistics.

    Attributes:
      name: Dataset name as configured.
      num_classes: Number of classes; labels are in ``range(num_classes)``.
      class_names: Name of each class index.
      image_shape: (H, W, C) of every image.
      train: Training split.
      validation: Validation split (model selection, early stopping).
      test: Test split (final reporting only).
      mean: float32 mean, broadcastable to (H, W, C), in [0, 1] pixel scale.
      std: float32 std, same convention; apply ``(x / 255 - mean) / std``.
      skipped_images: Undecodable image files left out (``bad_images='skip'``).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    train: Split
    validation: Split
    test: Split
    mean: np.ndarray
    std: np.ndarray
    skipped_images: tuple[str, ...] = ()


def list_datasets() -> tuple[str, ...]:
    """Returns the documented dataset names accepted by ``load_dataset``.

    Any other TFDS name also works when it is prepared in ``data_dir``.
    """
    return (*OFFLINE_DATASETS, *NAMED_DATASETS, IMAGE_FOLDER)


def config_value(config: Any, key: str, default: Any = None) -> Any:
    """Reads an optional config key; missing and None both mean the default."""
    value = getattr(config, key, None)
    return default if value is None else value


def _subset(images: np.ndarray, labels: np.ndarray, limit: int | None) -> Split:
    if limit is not None and limit < len(labels):
        keep = stratified_subset(labels, limit, seed=DEFAULT_SEED)
        images, labels = images[keep], labels[keep]
    return Split(images=images, labels=labels)


def load_dataset(data_config: Any) -> Dataset:
    """Loads the dataset described by ``data_config`` into memory.

    Args:
      data_config: ConfigDict (or any object with attributes) with the keys
        listed in this module's docstring.

    Returns:
      The loaded :class:`Dataset`.

    Raises:
      DatasetNotPreparedError: A named TFDS set is not prepared and download
        is off.
      DataError: The data cannot be used (missing path, damaged archive,
        undecodable image, bad split string); the message names the culprit.
    """
    name = config_value(data_config, "name", None)
    if not name:
        raise DataError(f"data.name is required; documented choices: {', '.join(list_datasets())}.")
    max_train = config_value(data_config, "max_train_examples", None)
    max_eval = config_value(data_config, "max_eval_examples", None)
    limits = {"train": max_train, "validation": max_eval, "test": max_eval}
    skipped: list[str] = []

    if name == IMAGE_FOLDER:
        path = config_value(data_config, "path", None)
        if not path:
            raise DataError("data.path (an image folder or tarball) is required when data.name='image_folder'.")
        arrays, class_names = load_image_folder(
            path,
            validation_fraction=config_value(data_config, "validation_fraction", 0.1),
            test_fraction=config_value(data_config, "test_fraction", 0.1),
            # Subset before decoding: images outside the subset are never read.
            max_examples=limits,
            bad_images=config_value(data_config, "bad_images", "error"),
            skipped=skipped,
        )
        if skipped:
            logging.warning(
                "data.bad_images=skip: left out %d undecodable image(s) from %s: %s%s",
                len(skipped), path, ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "",
            )
    else:
        overrides = {split: config_value(data_config, f"{split}_split", None) for split in SPLIT_NAMES}
        arrays, info = load_tfds(
            name,
            data_dir=config_value(data_config, "data_dir") or None,
            download=bool(config_value(data_config, "download", False)),
            splits=overrides,
        )
        class_names = info.class_names

    splits = {split: _subset(*arrays[split], limits[split]) for split in SPLIT_NAMES}
    mean, std = compute_preprocess_stats(splits["train"].images, config_value(data_config, "preprocess", "none"))
    return Dataset(
        name=name,
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_shape=tuple(int(d) for d in splits["train"].images.shape[1:]),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        mean=mean,
        std=std,
        skipped_images=tuple(skipped),
    )
