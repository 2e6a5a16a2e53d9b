"""Image-folder datasets: ``root/<split>/<class>/<image>``, as a directory or tarball.

``path`` is a directory or a ``.tar``/``.tar.gz``/``.tgz`` archive, read in
place (nothing is extracted to disk). The layout root may sit below leading
directories (``cifar10/train/airplane/0000.jpg``): it is the shallowest level
whose children are split names (``train``, ``validation`` or ``val`` or
``valid``, ``test``). Files elsewhere, hidden files and non-image files are
ignored.

Classes are the sorted class-directory names over all splits, so a class has
the same index in every split. A missing ``validation`` or ``test`` split is
carved from ``train`` with :func:`cnnjax.data.splits.stratified_split`.
Subsets (``max_examples``, ``max_per_class``) are chosen from the file list,
with a seeded stratified choice, before any image is decoded, so loading a
few hundred images from a large archive is fast.

Images are decoded with PIL to uint8 (H, W, C): grayscale stays 1 channel
unless some selected image is in colour, in which case all become RGB; alpha
is dropped. All images must share one size. No TensorFlow needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cnnjax.data.archive import ImageFiles
from cnnjax.data.decode_workers import decode_images
from cnnjax.data.errors import DataError
from cnnjax.data.splits import DEFAULT_SEED, SPLIT_NAMES, stratified_split, stratified_subset

IMAGE_FOLDER = "image_folder"  # the data.name of image folders (in memory or streamed)
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "val": "validation",
    "valid": "validation",
    "test": "test",
}
_LAYOUT = "root/<split>/<class>/<image> with split in train, validation (val), test"

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]
BAD_IMAGE_CHOICES = ("error", "skip")


def check_bad_images(choice: str) -> str:
    """``choice`` when it is a valid ``data.bad_images`` (in memory or streamed), else a DataError."""
    if choice not in BAD_IMAGE_CHOICES:
        raise DataError(f"data.bad_images={choice!r} is unknown; valid choices: {', '.join(BAD_IMAGE_CHOICES)}.")
    return choice


def index_splits(files: Sequence[str], source: str) -> dict[str, list[tuple[str, str]]]:
    """Groups files as split -> [(relpath, class_name)] at the detected layout root."""
    candidates = []
    for relpath in files:
        parts = relpath.split("/")
        if len(parts) >= 3 and parts[-3].lower() in SPLIT_ALIASES:
            candidates.append((tuple(parts[:-3]), parts[-3], parts[-2], relpath))
    if not candidates:
        raise DataError(f"No images found in {source!r}; expected the layout {_LAYOUT}.")
    depth = min(len(c[0]) for c in candidates)
    prefixes = {c[0] for c in candidates if len(c[0]) == depth}
    if len(prefixes) > 1:
        shown = sorted("/".join(p) or "." for p in prefixes)
        raise DataError(f"Several dataset roots in {source!r}: {shown}; keep one.")
    prefix = prefixes.pop()
    grouped: dict[str, list[tuple[str, str]]] = {}
    dir_names: dict[str, str] = {}
    for cand_prefix, split_dir, class_name, relpath in candidates:
        if cand_prefix != prefix:
            continue
        split = SPLIT_ALIASES[split_dir.lower()]
        if dir_names.setdefault(split, split_dir) != split_dir:
            raise DataError(
                f"Both {dir_names[split]!r} and {split_dir!r} in {source!r} name the {split!r} split; keep one."
            )
        grouped.setdefault(split, []).append((relpath, class_name))
    return grouped


def bad_image_error(name: str, source: str) -> DataError:
    """The error for an undecodable image under `data.bad_images='error'`."""
    return DataError(
        f"Cannot decode image {name!r} in {source!r}: not a readable image file. Remove or replace it, or "
        "pass --config.data.bad_images=skip to leave such images out (they are counted in the log and "
        "summary.json)."
    )


def stack_images(images: list[np.ndarray], names: list[str], shape: tuple[int, int, int], ref: str) -> np.ndarray:
    """Stacks decoded images into (N, *shape), converting grayscale to RGB if needed."""
    for image, name in zip(images, names):
        if image.shape[:2] != shape[:2]:
            raise DataError(
                f"Images differ in size: {ref!r} is {shape[:2]}, {name!r} is "
                f"{image.shape[:2]}; resize them to one size first."
            )
    if not images:
        return np.zeros((0, *shape), np.uint8)
    return np.stack([x if x.shape[2] == shape[2] else np.repeat(x, shape[2] // x.shape[2], axis=-1) for x in images])


def _split_limits(max_examples: int | Mapping[str, int | None] | None) -> dict[str, int | None]:
    if max_examples is None or isinstance(max_examples, int):
        return dict.fromkeys(SPLIT_NAMES, max_examples)
    unknown = set(max_examples) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"Unknown split(s) {sorted(unknown)}; expected {SPLIT_NAMES}.")
    return {split: max_examples.get(split) for split in SPLIT_NAMES}


def select_image_files(
    files: Sequence[str],
    source: str,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_examples: int | Mapping[str, int | None] | None = None,
    max_per_class: int | None = None,
    seed: int = DEFAULT_SEED,
) -> tuple[dict[str, list[str]], dict[str, np.ndarray], tuple[str, ...]]:
    """Assigns image files to splits and classes without reading any image.

    The carving and subset rules are those of :func:`load_image_folder`, so
    the in-memory loader and the streaming input see the same splits.

    Args:
      files: Relative paths of the candidate image files (``ImageFiles.files``).
      source: The folder or archive, for error messages.
      validation_fraction, test_fraction, max_examples, max_per_class, seed:
        As in :func:`load_image_folder`.

    Returns:
      ``(names, labels, class_names)``: ``names`` maps each split to its
      relative paths (source order), ``labels`` to int32 class indices.
    """
    limits = _split_limits(max_examples)
    grouped = index_splits(files, source)
    if "train" not in grouped:
        raise DataError(f"No 'train' split found in {source!r}; expected {_LAYOUT}.")
    class_names = tuple(sorted({c for items in grouped.values() for _, c in items}))
    class_index = {name: i for i, name in enumerate(class_names)}
    paths: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split, items in grouped.items():
        paths[split] = np.array([p for p, _ in items])
        labels[split] = np.array([class_index[c] for _, c in items], np.int32)

    missing = [s for s in ("validation", "test") if s not in grouped]
    if missing:
        carved = stratified_split(
            labels["train"],
            validation_fraction if "validation" in missing else 0.0,
            test_fraction if "test" in missing else 0.0,
            seed,
        )
        pool_paths, pool_labels = paths["train"], labels["train"]
        for split in ["train", *missing]:
            paths[split] = pool_paths[carved[split]]
            labels[split] = pool_labels[carved[split]]

    kept = {split: stratified_subset(labels[split], limits[split], max_per_class, seed) for split in SPLIT_NAMES}
    names = {split: [str(f) for f in paths[split][keep]] for split, keep in kept.items()}
    return names, {split: labels[split][keep] for split, keep in kept.items()}, class_names


def load_image_folder(
    path: str | os.PathLike,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_examples: int | Mapping[str, int | None] | None = None,
    max_per_class: int | None = None,
    seed: int = DEFAULT_SEED,
    bad_images: str = "error",
    skipped: list[str] | None = None,
) -> tuple[Arrays, tuple[str, ...]]:
    """Loads an image-folder dataset into memory.

    Args:
      path: Directory or tar archive (``.tar``, ``.tar.gz``, ``.tgz``).
      validation_fraction: Fraction of each class of ``train`` carved out as
        ``validation`` when the folder has no validation split.
      test_fraction: Same for ``test`` when the folder has no test split.
      max_examples: Most examples per split: one int for every split, or a
        mapping split -> int or None. A seeded, class-stratified subset.
      max_per_class: Most examples per class in every split.
      seed: Seed for carving and for subset selection.
      bad_images: ``error`` (an undecodable image raises) or ``skip`` (it is
        left out of its split).
      skipped: When given, receives the relative paths of skipped images.

    Returns:
      ``(arrays, class_names)``: ``arrays`` maps ``train``, ``validation``,
      ``test`` to ``(images, labels)``, uint8 (N, H, W, C) and int32 (N,);
      ``class_names`` are the sorted class-directory names.

    Raises:
      DataError: ``path`` does not exist or is a damaged archive, no images in
        the expected layout, no train split, an undecodable image (with
        ``bad_images='error'``) or images of different sizes.
    """
    check_bad_images(bad_images)
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(
            f"Image folder path {str(root)!r} (data.path) does not exist; it must be a directory or a tar "
            f"archive laid out as {_LAYOUT}."
        )
    reader = ImageFiles(root)
    try:
        names, labels, class_names = select_image_files(
            reader.files,
            str(root),
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            max_examples=max_examples,
            max_per_class=max_per_class,
            seed=seed,
        )
        # One read for all splits: a tarball is then decompressed only once.
        every_name = [name for split in SPLIT_NAMES for name in names[split]]
        every_image = iter(decode_images(every_name, reader.read(every_name)))
        selected: dict[str, tuple[list[np.ndarray], list[str], np.ndarray]] = {}
        for split in SPLIT_NAMES:
            decoded = [next(every_image) for _ in names[split]]
            bad = [name for name, image in zip(names[split], decoded) if image is None]
            if bad and bad_images == "error":
                raise bad_image_error(bad[0], str(root))
            if skipped is not None:
                skipped.extend(bad)
            keep = [i for i, image in enumerate(decoded) if image is not None]
            selected[split] = ([decoded[i] for i in keep], [names[split][i] for i in keep], labels[split][keep])
    finally:
        reader.close()

    first = next((x for decoded, _, _ in selected.values() for x in decoded), None)
    if first is None:
        raise DataError(f"No images selected from {str(root)!r}.")
    ref = next(names[0] for _, names, _ in selected.values() if names)
    channels = max(x.shape[2] for decoded, _, _ in selected.values() for x in decoded)
    shape = (first.shape[0], first.shape[1], channels)
    arrays: Arrays = {
        split: (stack_images(decoded, names, shape, ref), split_labels)
        for split, (decoded, names, split_labels) in selected.items()
    }
    return arrays, class_names
