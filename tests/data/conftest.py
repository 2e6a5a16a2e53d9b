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


# -- streaming input: a tiny TFDS set of JPEGs of two sizes, and a set without images --
STREAM_TRAIN = 26
STREAM_TEST = 6
STREAM_CLASSES = ("a", "b", "c", "d")


def stream_image(example_id: int, split: str) -> np.ndarray:
    """A uniform-colour image that survives JPEG, crops, flips and resizing.

    Channel 0 is ``10 * id + 5``, channel 1 tells the split (60 train, 180
    test), channel 2 the label. Shapes alternate 40x48 and 48x40.
    """
    shape = (40, 48) if example_id % 2 == 0 else (48, 40)
    image = np.empty((*shape, 3), np.uint8)
    image[..., 0] = 10 * example_id + 5
    image[..., 1] = 60 if split == "train" else 180
    image[..., 2] = 40 * (example_id % len(STREAM_CLASSES)) + 20
    return image


def stream_ids(images: np.ndarray) -> np.ndarray:
    """The example id of each uniform image (mean of channel 0)."""
    return np.rint((images[..., 0].reshape(len(images), -1).mean(axis=1) - 5) / 10).astype(int)


@pytest.fixture(scope="session")
def stream_tfds(tmp_path_factory):
    """A data_dir with ``stream_jpeg`` (JPEG images of varying size, 4 classes)
    and ``stream_no_image`` (a label but no image feature).

    Returns a namespace: ``data_dir``, ``num_train``, ``num_test``, ``image``
    (:func:`stream_image`) and ``ids`` (:func:`stream_ids`).
    """
    import tensorflow_datasets as tfds

    class StreamJpeg(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "stream_jpeg"
        VERSION = tfds.core.Version("1.0.0")
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(names=STREAM_CLASSES),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {
                "train": self._generate_examples("train", STREAM_TRAIN),
                "test": self._generate_examples("test", STREAM_TEST),
            }

        def _generate_examples(self, split, count):
            for i in range(count):
                yield i, {"image": stream_image(i, split), "label": i % len(STREAM_CLASSES)}

    class StreamNoImage(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "stream_no_image"
        VERSION = tfds.core.Version("1.0.0")
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {"values": tfds.features.Tensor(shape=(3,), dtype=np.float32), "label": tfds.features.ClassLabel(num_classes=2)}
                ),
                supervised_keys=("values", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(4):
                yield i, {"values": np.full(3, i, np.float32), "label": i % 2}

    data_dir = tmp_path_factory.mktemp("stream_tfds")
    for builder in (StreamJpeg, StreamNoImage):
        builder(data_dir=str(data_dir)).download_and_prepare()
    return types.SimpleNamespace(
        data_dir=str(data_dir), num_train=STREAM_TRAIN, num_test=STREAM_TEST, image=stream_image, ids=stream_ids
    )
