"""Shared, session-scoped data fixtures: TensorFlow work is paid for once per run."""

from __future__ import annotations

import types

import numpy as np
import pytest

MNIST_FAKE_TRAIN = 30
MNIST_FAKE_TEST = 10


def _fake_mnist_image(index: int) -> np.ndarray:
    """The image the fake ``mnist`` stores at source position ``index``."""
    image = np.zeros((28, 28, 1), np.uint8)
    image[0, 0, 0] = index  # Identifies the example after the round trip.
    image[1:, :, 0] = (index * 7) % 256
    return image


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """A fresh TFDS data_dir shared by the session (never ~/tensorflow_datasets)."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def offline_loaded(tfds_dir):
    """Both offline builders prepared into ``tfds_dir`` and loaded back."""
    from cnnjax.data.tfds_loader import load_tfds

    return {name: load_tfds(name, data_dir=str(tfds_dir)) for name in ("mnist5k", "digits")}


@pytest.fixture(scope="session")
def fake_mnist(tmp_path_factory):
    """A data_dir holding a tiny ``mnist`` 3.0.1 in TFDS format, made offline.

    Returns a namespace: ``data_dir``, ``num_train``, ``num_test`` (test source
    positions start at 100) and ``image(position)``, the stored image.

    A builder named ``mnist`` with MNIST's version and features writes the
    files; TFDS's own registered MNIST builder then reads them, exactly as it
    would read a real prepared copy.
    """
    import tensorflow_datasets as tfds

    class FakeMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = tfds.core.Version("3.0.1")
        code_path = None  # See cnnjax.data.builders: avoids a TFDS packaging bug.

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(28, 28, 1)),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
                supervised_keys=("image", "label"),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples(0, MNIST_FAKE_TRAIN),
                "test": self._generate_examples(100, MNIST_FAKE_TEST),
            }

        def _generate_examples(self, start, count):
            for i in range(start, start + count):
                yield i, {"image": _fake_mnist_image(i), "label": i % 10}

    data_dir = tmp_path_factory.mktemp("fake_mnist")
    FakeMnist(data_dir=str(data_dir)).download_and_prepare()
    return types.SimpleNamespace(
        data_dir=str(data_dir), num_train=MNIST_FAKE_TRAIN, num_test=MNIST_FAKE_TEST, image=_fake_mnist_image
    )
