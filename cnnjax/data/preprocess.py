"""Input normalisation statistics, computed on the training split only.

The input pipeline maps a uint8 image ``x`` to ``(x / 255 - mean) / std``;
this module computes ``mean`` and ``std`` for each choice in
:data:`PREPROCESS_CHOICES`:

* ``none``: mean 0, std 1 (inputs stay in [0, 1]).
* ``channel_mean``: per-channel mean, shape (1, 1, C); std 1.
* ``mean_image``: per-pixel mean image, shape (H, W, C); std 1.
* ``standardize``: per-channel mean and per-channel std, shape (1, 1, C); a
  std below ``STD_EPSILON`` (a constant channel) is raised to it.

Statistics are accumulated in float64 over chunks of images, so a large uint8
training set is never copied to floating point in full. No TensorFlow needed.
"""

from __future__ import annotations

import numpy as np

PREPROCESS_CHOICES = ("none", "channel_mean", "mean_image", "standardize")
STD_EPSILON = 1e-6
_CHUNK = 4096  # Images per chunk: bounds the float64 temporaries.


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise ValueError(
            "Expected a non-empty uint8 array of shape (N, H, W, C), got "
            f"dtype {images.dtype} and shape {images.shape}."
        )
    return images


def _pixel_mean(images: np.ndarray) -> np.ndarray:
    """Mean over images of x / 255, shape (H, W, C), float64."""
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), _CHUNK):
        total += images[start : start + _CHUNK].sum(axis=0, dtype=np.float64)
    return total / (255.0 * len(images))


def _channel_std(images: np.ndarray, channel_mean: np.ndarray) -> np.ndarray:
    """Per-channel std of x / 255 about ``channel_mean``, shape (C,), float64."""
    # Two-pass (mean first, then squared deviations) for numerical accuracy.
    squares = np.zeros(images.shape[-1], np.float64)
    for start in range(0, len(images), _CHUNK):
        chunk = images[start : start + _CHUNK].astype(np.float64) / 255.0
        squares += ((chunk - channel_mean) ** 2).sum(axis=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    return np.sqrt(squares / count)


def compute_preprocess_stats(train_images: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Computes the normalisation ``(mean, std)`` for one preprocessing choice.

    Args:
      train_images: uint8 training images, shape (N, H, W, C). Pass the train
        split only, so no statistic leaks from evaluation data.
      method: One of :data:`PREPROCESS_CHOICES`.

    Returns:
      ``(mean, std)`` float32 arrays of shape (1, 1, C) or (H, W, C), in the
      [0, 1] pixel scale, to be applied as ``(x / 255 - mean) / std``.

    Raises:
      ValueError: If ``method`` is unknown or the images are malformed.
    """
    if method not in PREPROCESS_CHOICES:
        raise ValueError(f"Unknown preprocess method {method!r}; valid choices: {', '.join(PREPROCESS_CHOICES)}.")
    images = _check_images(train_images)
    channels = images.shape[-1]
    mean = np.zeros((1, 1, channels), np.float64)
    std = np.ones((1, 1, channels), np.float64)
    if method != "none":
        pixel_mean = _pixel_mean(images)
        if method == "mean_image":
            mean = pixel_mean
        else:
            mean = pixel_mean.mean(axis=(0, 1), keepdims=True)
    if method == "standardize":
        std = _channel_std(images, mean[0, 0]).reshape(1, 1, channels)
        std = np.maximum(std, STD_EPSILON)
    return mean.astype(np.float32), std.astype(np.float32)
