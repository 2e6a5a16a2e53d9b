"""Normalisation statistics of a streamed data set: ImageNet's, or an estimate from a bounded sample.

ImageNet's published per-channel mean and std serve RGB sets whose TFDS name
starts with ``imagenet`` (and ``imagenette``, ``imagewang``); other sets get
an estimate from ``stats_examples`` training images (the first ones of a TFDS
split, a seeded class-stratified choice of a folder's files), taken on the
evaluation view at 64 px. Never a full pass over the data. Both are float32
``(1, 1, C)`` in the [0, 1] pixel scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnjax.data import host_augment
from cnnjax.data.preprocess import compute_preprocess_stats
from cnnjax.data.stream_checks import checked, drop_undecodable
from cnnjax.data.stream_sources import parallel_map

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # [0, 1] pixel scale, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_LIKE_PREFIXES = ("imagenet", "imagenette", "imagewang")
DEFAULT_STATS_EXAMPLES = 512
STATS_IMAGE_SIZE = 64  # side of the sampled images the statistics are taken on
_SAMPLE_BATCH = 64


def is_imagenet_like(name: str) -> bool:
    base = name.split(":")[0].split("/")[0]
    return base.startswith(IMAGENET_LIKE_PREFIXES)


def normalisation_stats(source, data_config: Any, preprocess: str, size: int, stats_examples: int,
                        skipped: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(mean, std, where they come from)`` for ``preprocess`` of a stream's source."""
    channels = source.channels
    if preprocess == "none":
        mean, std = np.zeros((1, 1, channels), np.float32), np.ones((1, 1, channels), np.float32)
        stats_source = "none"
    elif is_imagenet_like(source.name) and channels == 3:
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 1, 3)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 1, 3)
        if preprocess == "channel_mean":
            std = np.ones_like(std)
        stats_source = "imagenet"
    else:
        sample = sample_images(source, data_config, size, stats_examples, skipped)
        mean, std = compute_preprocess_stats(sample, preprocess)
        stats_source = f"sample of {len(sample)} training images"
    return mean, std, stats_source


def sample_images(source, data_config: Any, size: int, count: int, skipped: list[str] | None = None) -> np.ndarray:
    """Up to ``count`` training images in the evaluation view, uint8 (N, s, s, C).

    ``s = min(size, STATS_IMAGE_SIZE)``: pixel statistics barely depend on the
    resolution (a bilinear downscale without antialiasing samples pixels), and
    the sample stays a few MB.
    """

    if count < 1:
        raise ValueError(f"stats_examples must be >= 1, got {count}.")
    size = min(size, STATS_IMAGE_SIZE)
    ds = source.dataset("train", 0, 1, shuffle_seed=None, limit=count)
    ds = parallel_map(ds.enumerate(), lambda position, example: {
        "image": host_augment.center_crop(example[0], size=size, channels=source.channels), "position": position})
    ds = drop_undecodable(ds, data_config).batch(_SAMPLE_BATCH)
    file_at = source.file_at("train", 0, 1, shuffle_seed=None, limit=count)
    total = min(count, source.num_examples("train"))
    images = [b["image"] for b in checked(ds.as_numpy_iterator(), source, "train", data_config, file_at,
                                          _SAMPLE_BATCH, total=total, skipped=skipped)]
    if not images:
        raise ValueError(f"The training split of {source.name!r} is empty.")
    return np.concatenate(images)
