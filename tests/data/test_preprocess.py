"""Normalisation statistics against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax.data import PREPROCESS_CHOICES, compute_preprocess_stats
from cnnjax.data import preprocess as preprocess_module


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(10, 4, 5, 3), dtype=np.uint8)


def _reference(images, method):
    x = images.astype(np.float64) / 255.0
    channels = images.shape[-1]
    if method == "none":
        return np.zeros((1, 1, channels)), np.ones((1, 1, channels))
    if method == "channel_mean":
        return x.mean(axis=(0, 1, 2)).reshape(1, 1, -1), np.ones((1, 1, channels))
    if method == "mean_image":
        return x.mean(axis=0), np.ones((1, 1, channels))
    return x.mean(axis=(0, 1, 2)).reshape(1, 1, -1), x.std(axis=(0, 1, 2)).reshape(1, 1, -1)


@pytest.mark.parametrize("method", PREPROCESS_CHOICES)
def test_matches_numpy_reference(images, method, monkeypatch):
    monkeypatch.setattr(preprocess_module, "_CHUNK", 3)  # Exercise the chunked accumulation.
    mean, std = compute_preprocess_stats(images, method)
    expected_mean, expected_std = _reference(images, method)
    assert mean.dtype == std.dtype == np.float32
    assert mean.shape == expected_mean.shape and std.shape == expected_std.shape
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std, expected_std, rtol=1e-5)
    # The documented use broadcasts against one image and against a batch.
    assert ((images / 255.0 - mean) / std).shape == images.shape


def test_standardize_output_is_standard(images):
    mean, std = compute_preprocess_stats(images, "standardize")
    normalised = (images / 255.0 - mean) / std
    np.testing.assert_allclose(normalised.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(normalised.std(axis=(0, 1, 2)), 1, atol=1e-5)


def test_constant_channel_std_is_guarded():
    images = np.zeros((4, 2, 2, 2), np.uint8)
    images[..., 1] = np.arange(4, dtype=np.uint8)[:, None, None]
    mean, std = compute_preprocess_stats(images, "standardize")
    assert std[0, 0, 0] == pytest.approx(preprocess_module.STD_EPSILON) and std[0, 0, 1] > 0.001
    assert np.isfinite((images / 255.0 - mean) / std).all()


def test_grayscale_shapes():
    images = np.full((3, 6, 7, 1), 51, np.uint8)
    mean, std = compute_preprocess_stats(images, "mean_image")
    assert mean.shape == (6, 7, 1) and std.shape == (1, 1, 1)
    np.testing.assert_allclose(mean, 0.2)


def test_unknown_method_names_choices(images):
    with pytest.raises(ValueError) as excinfo:
        compute_preprocess_stats(images, "zca")
    message = str(excinfo.value)
    assert "'zca'" in message and all(choice in message for choice in PREPROCESS_CHOICES)


def test_rejects_non_uint8_images(images):
    with pytest.raises(ValueError, match="uint8"):
        compute_preprocess_stats(images.astype(np.float32), "none")
    with pytest.raises(ValueError, match="non-empty"):
        compute_preprocess_stats(images[:0], "none")
