"""Loads one split only (for evaluating a trained model on it): ``load_one_split``.

An image folder may hold just ``test/<class>/...``; when it also has ``train``,
the split is chosen exactly as :func:`cnnjax.data.load_dataset` chooses it (a
missing test split is carved from ``train`` with the same seed), so a run's own
test split is reproduced. Only that split's images are decoded. TFDS sets load
only the one TFDS split string. ``max_eval_examples`` selects the same subset
as in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnjax.data import image_folder, tfds_loader
from cnnjax.data.archive import ImageFiles
from cnnjax.data.decode_workers import decode_images
from cnnjax.data.image_folder import IMAGE_FOLDER
from cnnjax.data.loader import Split, config_value
from cnnjax.data.splits import DEFAULT_SEED, SPLIT_NAMES, stratified_subset


def folder_split_files(data_config: Any, split: str) -> tuple[ImageFiles, list[str], list[str], tuple[str, ...]]:
    """An open reader, the files of one folder split and their class names, and the folder's class names.

    The files are chosen as :func:`cnnjax.data.load_dataset` chooses them; nothing
    is decoded. The caller closes the reader.
    """
    root = Path(config_value(data_config, "path", "")).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"Image folder path {str(root)!r} does not exist.")
    reader = ImageFiles(root)
    try:
        grouped = image_folder.index_splits(reader.files, str(root))
        if "train" in grouped:
            names, labels, class_names = image_folder.select_image_files(
                reader.files, str(root),
                validation_fraction=config_value(data_config, "validation_fraction", 0.1),
                test_fraction=config_value(data_config, "test_fraction", 0.1),
                max_examples={split: config_value(data_config, "max_eval_examples")},
            )
            files, classes = names[split], [class_names[i] for i in labels[split]]
        elif split in grouped:
            class_names = tuple(sorted({c for _, c in grouped[split]}))
            index = {c: i for i, c in enumerate(class_names)}
            labels = np.array([index[c] for _, c in grouped[split]], np.int32)
            keep = stratified_subset(labels, config_value(data_config, "max_eval_examples"), seed=DEFAULT_SEED)
            files = [grouped[split][i][0] for i in keep]
            classes = [grouped[split][i][1] for i in keep]
        else:
            raise ValueError(f"No {split!r} split in {str(root)!r}; it has: {', '.join(sorted(grouped))}.")
    except BaseException:
        reader.close()
        raise
    return reader, files, classes, class_names


def _folder_split(data_config: Any, split: str) -> tuple[np.ndarray, list[str], tuple[str, ...]]:
    """(uint8 images, per-image class names, folder class names) of one folder split."""
    reader, files, classes, class_names = folder_split_files(data_config, split)
    root = str(config_value(data_config, "path", ""))
    try:
        decoded = decode_images(files, reader.read(files))
    finally:
        reader.close()
    bad = next((name for name, image in zip(files, decoded) if image is None), None)
    if bad is not None:
        raise image_folder.bad_image_error(bad, root)
    if not decoded:
        raise ValueError(f"No images in the {split!r} split of {root!r}.")
    channels = max(x.shape[2] for x in decoded)
    shape = (*decoded[0].shape[:2], channels)
    return image_folder.stack_images(decoded, files, shape, files[0]), classes, class_names


def _tfds_split(data_config: Any, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    tfds = tfds_loader.import_tfds()
    name = data_config.name
    builder = tfds_loader.get_builder(
        tfds, name, config_value(data_config, "data_dir") or None, bool(config_value(data_config, "download", False))
    )
    split_string = config_value(data_config, f"{split}_split") or tfds_loader.default_splits(
        name, available=tuple(builder.info.splits))[split]
    image_key, label_key = tfds_loader.supervised_keys(builder.info)
    example = tfds.as_numpy(builder.as_dataset(split=split_string, batch_size=-1))
    images, labels = example[image_key], example[label_key].astype(np.int32)
    if images.dtype != np.uint8:
        raise ValueError(f"{name!r} split {split_string!r} has {images.dtype} images; expected uint8.")
    keep = stratified_subset(labels, config_value(data_config, "max_eval_examples"), seed=DEFAULT_SEED)
    class_names = tuple(str(n) for n in builder.info.features[label_key].names)
    return images[keep], labels[keep], class_names


def load_one_split(data_config: Any, split: str = "test") -> tuple[np.ndarray, list[str]]:
    """Loads one split of ``data_config`` without the others.

    Args:
      data_config: the ``data`` block of a config (see ``cnnjax.data.loader``).
      split: ``train``, ``validation`` or ``test``.

    Returns:
      ``(images, class_of_each_image)``: uint8 (N, H, W, C) and the class name of
      every image (names, so the caller maps them onto its own class order).

    Raises:
      DatasetNotPreparedError, FileNotFoundError, ValueError: as ``load_dataset``.
    """
    if split not in SPLIT_NAMES:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLIT_NAMES}.")
    if data_config.name == IMAGE_FOLDER:
        images, classes, _ = _folder_split(data_config, split)
        return images, classes
    images, labels, class_names = _tfds_split(data_config, split)
    Split(images=images, labels=labels)  # same shape checks as a full load
    return images, [class_names[i] for i in labels]
