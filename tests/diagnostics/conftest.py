"""Shared fixtures for the babysitter's tests: the default config and its data, loaded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnjax.data import Dataset, Split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def diag_data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("diag_tfds"))


@pytest.fixture(scope="session")
def mnist5k(diag_data_dir, load_config):
    """The default config's data set (4,000 training digits)."""
    from cnnjax.data import load_dataset

    config = load_config("default")
    config.data.data_dir = diag_data_dir
    return load_dataset(config.data)


@pytest.fixture()
def default_config(diag_data_dir, load_config):
    config = load_config("default")
    config.data.data_dir = diag_data_dir
    config.progress_bar = False
    return config


def synthetic_dataset(num_train=200, shape=(8, 8, 1), classes=4, seed=0) -> Dataset:
    """Learnable random data: each class has its own mean image."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(40, 215, size=(classes, *shape))

    def split(n):
        labels = (np.arange(n) % classes).astype(np.int32)
        noise = rng.normal(0, 25, size=(n, *shape))
        images = np.clip(centres[labels] + noise, 0, 255).astype(np.uint8)
        return Split(images, labels)

    train = split(num_train)
    mean = np.full((1, 1, shape[-1]), train.images.mean() / 255, np.float32)
    std = np.full((1, 1, shape[-1]), train.images.std() / 255, np.float32)
    return Dataset("synthetic", classes, tuple(str(i) for i in range(classes)), shape, train, split(40), split(40),
                   mean, std)


@pytest.fixture()
def make_synthetic():
    """`synthetic_dataset` as a fixture (test modules cannot import conftest)."""
    return synthetic_dataset
