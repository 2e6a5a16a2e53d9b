"""Named TFDS sets: loading from a local data_dir, split mapping, missing data."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from cnnjax.data import DatasetNotPreparedError, list_datasets, load_dataset, tfds_loader
from cnnjax.data.tfds_loader import default_splits, load_tfds


def _expected(fake_mnist, indices):
    images = np.stack([fake_mnist.image(i) for i in indices])
    return images, np.array([i % 10 for i in indices], np.int32)


def test_named_mnist_from_local_data_dir(fake_mnist):
    arrays, info = load_tfds(
        "mnist",
        data_dir=fake_mnist.data_dir,
        splits={"train": "train[:20]", "validation": "train[20:]"},
    )
    assert info == tfds_loader.TfdsInfo(10, tuple(str(i) for i in range(10)))
    wanted = {
        "train": range(20),
        "validation": range(20, fake_mnist.num_train),
        "test": range(100, 100 + fake_mnist.num_test),
    }
    for split, indices in wanted.items():
        images, labels = arrays[split]
        expected_images, expected_labels = _expected(fake_mnist, indices)
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)  # Grayscale stays 1 channel.
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)


def test_named_default_carve_goes_through_load_tfds(fake_mnist, monkeypatch):
    # The real carve keeps 55,000 train examples; shrink it to fit the fake.
    monkeypatch.setitem(tfds_loader.NAMED_TRAIN_COUNTS, "mnist", 25)
    arrays, _ = load_tfds("mnist", data_dir=fake_mnist.data_dir)
    assert {split: len(labels) for split, (_, labels) in arrays.items()} == {
        "train": 25,
        "validation": fake_mnist.num_train - 25,
        "test": fake_mnist.num_test,
    }
    np.testing.assert_array_equal(arrays["validation"][0][:, 0, 0, 0], np.arange(25, fake_mnist.num_train))


def test_load_dataset_named_with_overrides(fake_mnist):
    config = ml_collections.ConfigDict(
        {
            "name": "mnist",
            "data_dir": fake_mnist.data_dir,
            "download": False,
            "train_split": "train[:20]",
            "validation_split": "train[20:]",
            "test_split": None,
            "max_train_examples": 10,
            "max_eval_examples": None,
            "preprocess": "channel_mean",
        }
    )
    dataset = load_dataset(config)
    assert (dataset.name, dataset.num_classes, dataset.image_shape) == ("mnist", 10, (28, 28, 1))
    assert (dataset.train.num_examples, dataset.validation.num_examples, dataset.test.num_examples) == (10, 10, 10)
    assert sorted(dataset.train.labels.tolist()) == list(range(10))  # Stratified: one per class.
    expected_mean = (dataset.train.images / 255.0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(dataset.mean.ravel(), expected_mean, rtol=1e-5)
    np.testing.assert_array_equal(dataset.std, np.ones((1, 1, 1), np.float32))


def test_not_prepared_error_names_dataset_dir_and_fixes(tmp_path):
    data_dir = str(tmp_path / "empty")
    with pytest.raises(DatasetNotPreparedError) as excinfo:
        load_tfds("mnist", data_dir=data_dir, download=False)
    message = str(excinfo.value)
    assert "'mnist'" in message
    assert f"tfds build mnist --data_dir={data_dir}" in message
    assert "--config.data.download=True" in message


def test_not_prepared_error_from_load_dataset(tmp_path):
    config = ml_collections.ConfigDict({"name": "cifar10", "data_dir": str(tmp_path)})
    with pytest.raises(DatasetNotPreparedError, match=r"tfds build cifar10 --data_dir="):
        load_dataset(config)


def test_unknown_dataset_and_split(tmp_path, fake_mnist):
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_set_xyz'"):
        load_tfds("no_such_set_xyz", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        load_tfds("mnist", data_dir=fake_mnist.data_dir, splits={"dev": "train"})


def test_variable_size_images_are_rejected_before_download(tmp_path):
    # imagenette has images of varying size: refuse before asking for a download.
    with pytest.raises(ValueError, match="fixed-size"):
        load_tfds("imagenette", data_dir=str(tmp_path))


def test_default_splits():
    assert default_splits("mnist") == {"train": "train[:55000]", "validation": "train[55000:]", "test": "test"}
    assert default_splits("fashion_mnist")["train"] == "train[:55000]"
    assert default_splits("cifar10:3.0.2") == {"train": "train[:45000]", "validation": "train[45000:]", "test": "test"}
    assert default_splits("cifar100")["validation"] == "train[45000:]"
    assert default_splits("kmnist") == {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
    assert default_splits("imagenette", ("train", "validation"))["test"] == "validation"
    assert default_splits("only_train", ("train",)) == {
        "train": "train[:80%]",
        "validation": "train[80%:90%]",
        "test": "train[90%:]",
    }
    assert default_splits("digits") == {"train": "train", "validation": "validation", "test": "test"}


def test_list_datasets():
    names = list_datasets()
    for name in ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder"):
        assert name in names


def test_load_dataset_offline_subset(offline_loaded, tfds_dir):
    config = ml_collections.ConfigDict(
        {"name": "mnist5k", "data_dir": str(tfds_dir), "max_train_examples": 200, "max_eval_examples": 50}
    )
    dataset = load_dataset(config)
    assert dataset.train.num_examples == 200 and dataset.validation.num_examples == 50
    assert np.bincount(dataset.train.labels).tolist() == [20] * 10
    assert dataset.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_array_equal(dataset.mean, np.zeros((1, 1, 1), np.float32))  # preprocess defaults to 'none'.
    again = load_dataset(config)
    np.testing.assert_array_equal(again.train.images, dataset.train.images)
