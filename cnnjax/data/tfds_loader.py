"""Loads whole TFDS splits into memory as numpy arrays.

Two kinds of names are accepted:

* The offline builders of :mod:`cnnjax.data.builders` (``mnist5k``,
  ``digits``): always prepared on demand into ``data_dir`` (no network), with
  their own fixed ``train`` / ``validation`` / ``test`` splits.
* Any TFDS dataset name (documented: ``mnist``, ``fashion_mnist``,
  ``cifar10``, ``cifar100``). By default ``validation`` is a fixed tail of the
  official train split (see :func:`default_splits`) and ``test`` is ``test``.
  The data must already be prepared in ``data_dir`` unless ``download=True``.

TensorFlow is imported only inside functions, so importing this module (for
example for :class:`DatasetNotPreparedError`) works without TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import NamedTuple

import numpy as np

from cnnjax.data.errors import DataError
from cnnjax.data.splits import SPLIT_NAMES

OFFLINE_DATASETS = ("mnist5k", "digits")
# Train examples kept for training; the rest of the official train split is
# the validation split. Fixed counts keep the carve identical across versions.
NAMED_TRAIN_COUNTS = {
    "mnist": 55000,
    "fashion_mnist": 55000,
    "cifar10": 45000,
    "cifar100": 45000,
}
NAMED_DATASETS = tuple(NAMED_TRAIN_COUNTS)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class DatasetNotPreparedError(RuntimeError):
    """A TFDS dataset is not prepared in the data_dir and downloading is off."""


class TfdsInfo(NamedTuple):
    """What a loaded TFDS dataset tells about its labels."""

    num_classes: int
    class_names: tuple[str, ...]


def _base_name(name: str) -> str:
    """``'cifar10:3.0.2'`` or ``'name/config'`` -> the bare dataset name."""
    return name.split(":")[0].split("/")[0]


def default_splits(name: str, available: Collection[str] = ("train", "test")) -> dict[str, str]:
    """Returns the default TFDS split strings for a named dataset.

    Args:
      name: TFDS dataset name.
      available: Split names the dataset provides.

    Returns:
      Dict from ``'train'``, ``'validation'``, ``'test'`` to TFDS split
      strings. ``validation`` is carved from the tail of ``train`` (fixed
      counts for the documented sets, else the last 10%); ``test`` is the
      official ``test`` split, else the official ``validation`` split, else
      the last 10% of ``train`` (then train keeps 80%).
    """
    base = _base_name(name)
    if base in OFFLINE_DATASETS:
        return {split: split for split in SPLIT_NAMES}
    if base in NAMED_TRAIN_COUNTS:
        count = NAMED_TRAIN_COUNTS[base]
        train, validation = f"train[:{count}]", f"train[{count}:]"
    else:
        train, validation = "train[:90%]", "train[90%:]"
    if "test" in available:
        test = "test"
    elif "validation" in available:
        test = "validation"
    else:
        train, validation, test = "train[:80%]", "train[80%:90%]", "train[90%:]"
    return {"train": train, "validation": validation, "test": test}


def import_tfds():
    """Imports TFDS, keeping TensorFlow quiet and off any GPU (JAX owns it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF already initialised its devices; nothing to do.
        pass
    return tfds


def _not_prepared_message(name: str, data_dir: str) -> str:
    return (
        f"TFDS dataset {name!r} is not prepared in data_dir {data_dir!r} and "
        "downloading is disabled. Prepare it once with\n"
        f"  tfds build {name} --data_dir={data_dir}\n"
        "or rerun with --config.data.download=True (and, if it lives "
        f"elsewhere, --config.data.data_dir=DIR)."
    )


def supervised_keys(info) -> tuple[str, str]:
    """Returns (image key, label key), checking the images have one fixed shape."""
    image_key, label_key = info.supervised_keys or ("image", "label")
    image_shape = getattr(info.features[image_key], "shape", ())
    if len(image_shape) != 3 or None in image_shape:
        # Whole-split batching needs one fixed image size; TF's error would not say so.
        raise DataError(
            f"{info.full_name!r} has images of shape {image_shape}; only fixed-size (H, W, C) image sets can "
            "be loaded whole. Pick a fixed-size config of the dataset or an image folder of resized images."
        )
    return image_key, label_key


def get_builder(tfds, name: str, data_dir: str | None, download: bool, check_features=supervised_keys):
    """Returns a prepared builder, preparing it when allowed.

    ``check_features(info)`` runs before any download, so an unusable set is
    refused first; the default asks for fixed-size images (whole-split
    loading). Streaming passes its own check, which allows any image size.
    """
    if _base_name(name) in OFFLINE_DATASETS:
        from cnnjax.data import builders  # Registers the offline builders.

        builder = builders.OFFLINE_BUILDERS[_base_name(name)](data_dir=data_dir)
        # Offline sets build from installed packages; no network is used.
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        return builder
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise DataError(
            f"Unknown dataset {name!r}: not a TFDS dataset and not found in data_dir {data_dir!r}."
        ) from err
    check_features(builder.info)  # Fail before asking anyone to download an unusable set.
    if not builder.is_prepared():
        if not download:
            raise DatasetNotPreparedError(_not_prepared_message(name, os.fspath(builder.data_dir_root)))
        builder.download_and_prepare()
    return builder


def load_tfds(
    name: str,
    data_dir: str | None = None,
    download: bool = False,
    splits: Mapping[str, str | None] | None = None,
) -> tuple[Arrays, TfdsInfo]:
    """Loads the train/validation/test splits of a TFDS dataset into memory.

    Args:
      name: ``mnist5k``, ``digits`` or any TFDS name (optionally with
        ``/config`` or ``:version``).
      data_dir: TFDS data directory; None uses the TFDS default
        (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: Whether a named dataset that is not prepared may be
        downloaded and prepared. Offline builders are always prepared.
      splits: Optional overrides, split name -> TFDS split string (e.g.
        ``{'validation': 'train[50000:]'}``); missing or None entries use
        :func:`default_splits`.

    Returns:
      ``(arrays, info)``: ``arrays`` maps each of ``train``, ``validation``,
      ``test`` to ``(images, labels)``, uint8 (N, H, W, C) and int32 (N,).

    Raises:
      DatasetNotPreparedError: A named dataset is missing and download is off.
      ValueError: The name is unknown or the images are not fixed-size.
    """
    tfds = import_tfds()
    builder = get_builder(tfds, name, data_dir, download)
    split_strings = default_splits(name, available=tuple(builder.info.splits))
    for split, override in (splits or {}).items():
        if split not in SPLIT_NAMES:
            raise ValueError(f"Unknown split {split!r}; expected one of {SPLIT_NAMES}.")
        if override is not None:
            split_strings[split] = override

    image_key, label_key = supervised_keys(builder.info)
    arrays: Arrays = {}
    for split, split_string in split_strings.items():
        try:
            dataset = builder.as_dataset(split=split_string, batch_size=-1)
        except (ValueError, KeyError, AssertionError) as err:  # TFDS's split parser raises these
            raise DataError(
                f"data.{split}_split={split_string!r} is not a split of {name!r} ({err}); its splits: "
                f"{', '.join(builder.info.splits)}, optionally sliced as 'train[:90%]'."
            ) from None
        example = tfds.as_numpy(dataset)
        images, labels = example[image_key], example[label_key]
        if images.dtype != np.uint8:
            raise DataError(f"{name!r} split {split_string!r} has {images.dtype} images; expected uint8.")
        arrays[split] = (images, labels.astype(np.int32))

    label_feature = builder.info.features[label_key]
    class_names = tuple(str(n) for n in label_feature.names)
    return arrays, TfdsInfo(num_classes=label_feature.num_classes, class_names=class_names)
