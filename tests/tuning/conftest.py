"""Fixtures of the sweep tests."""

import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory, load_config):
    """(TFDS data_dir, loaded mnist5k) for the smoke sweep configs, built once per test module."""
    from cnnjax.data import load_dataset

    config = load_config("sweep_lr_wd", "smoke")
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    return config.data.data_dir, load_dataset(config.data)
