"""Seeded, stratified index selection shared by every dataset source.

Two operations, both pure functions of the labels and a seed, so that the same
inputs always select the same examples on any machine:

* :func:`stratified_split` carves ``train`` / ``validation`` / ``test`` index
  sets out of one labelled pool. Within each class (in ascending label order,
  drawing from a single ``np.random.default_rng(seed)``) the examples are
  permuted; the first ``round(n * (1 - val - test))`` go to ``train``, the next
  ``round(n * val)`` to ``validation`` and the rest to ``test`` (rounding is
  half-up).
* :func:`stratified_subset` picks a fixed subset whose class proportions follow
  the full set, optionally capping the number of examples per class.

Index arrays are returned sorted, so selected examples keep their source order.
This module has no TensorFlow dependency.
"""

from __future__ import annotations

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_SEED = 0


def _round_half_up(x: float) -> int:
    # Python's round() is half-to-even; half-up is easier to state in docs.
    # The tiny epsilon absorbs float error such as 0.8 * 500 = 400.00000000000006.
    return int(np.floor(x + 0.5 + 1e-9))


def _class_permutations(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Returns one seeded permutation of example indices per class, in label order."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def stratified_split(
    labels: np.ndarray,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = DEFAULT_SEED,
) -> dict[str, np.ndarray]:
    """Splits example indices into train/validation/test, stratified by class.

    Args:
      labels: 1-D integer labels of the pool to split.
      validation_fraction: Fraction of each class that goes to ``validation``.
      test_fraction: Fraction of each class that goes to ``test``.
      seed: Seed of the permutation drawn within each class.

    Returns:
      A dict mapping ``'train'``, ``'validation'`` and ``'test'`` to sorted
      int64 index arrays that together partition ``range(len(labels))``.

    Raises:
      ValueError: If the fractions are negative or sum to more than 1.
    """
    if validation_fraction < 0 or test_fraction < 0:
        raise ValueError("validation_fraction and test_fraction must be >= 0.")
    train_fraction = 1.0 - validation_fraction - test_fraction
    if train_fraction < -1e-9:
        raise ValueError(
            f"validation_fraction + test_fraction must be <= 1, got {validation_fraction} + {test_fraction}."
        )
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for perm in _class_permutations(labels, seed):
        n = len(perm)
        n_train = min(n, _round_half_up(n * train_fraction))
        n_val = min(n - n_train, _round_half_up(n * validation_fraction))
        parts["train"].append(perm[:n_train])
        parts["validation"].append(perm[n_train : n_train + n_val])
        parts["test"].append(perm[n_train + n_val :])
    return {
        name: np.sort(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64) for name, chunks in parts.items()
    }


def stratified_subset(
    labels: np.ndarray,
    max_examples: int | None = None,
    max_per_class: int | None = None,
    seed: int = DEFAULT_SEED,
) -> np.ndarray:
    """Selects a fixed, class-proportional subset of example indices.

    Each class is permuted with the seed; ``max_per_class`` truncates every
    class, then examples are taken round-robin in proportion to class size
    until ``max_examples`` are chosen. A smaller ``max_examples`` always
    selects a subset of what a larger one selects.

    Args:
      labels: 1-D integer labels.
      max_examples: Total number of examples to keep; None keeps all.
      max_per_class: Most examples kept per class; None means no cap.
      seed: Seed of the permutation drawn within each class.

    Returns:
      Sorted int64 indices into ``labels``.

    Raises:
      ValueError: If a limit is negative.
    """
    for value, what in ((max_examples, "max_examples"), (max_per_class, "max_per_class")):
        if value is not None and value < 0:
            raise ValueError(f"{what} must be >= 0 or None, got {value}.")
    perms = _class_permutations(labels, seed)
    if max_per_class is not None:
        perms = [perm[:max_per_class] for perm in perms]
    if not perms:
        return np.zeros(0, np.int64)
    indices = np.concatenate(perms)
    # The position of an example within its (truncated) class, relative to the
    # class size, orders examples so every prefix is class-proportional.
    keys = np.concatenate([(np.arange(len(p)) + 0.5) / max(len(p), 1) for p in perms])
    class_ids = np.concatenate([np.full(len(p), i) for i, p in enumerate(perms)])
    order = np.lexsort((class_ids, keys))
    if max_examples is not None:
        order = order[:max_examples]
    return np.sort(indices[order]).astype(np.int64)
