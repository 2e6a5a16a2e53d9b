"""Datasets as in-memory numpy arrays: TFDS sets, offline sets and image folders.

Typical use::

    from cnnjax.data import load_dataset
    dataset = load_dataset(config.data)  # -> Dataset with train/validation/test

Importing this package does not import TensorFlow: only loading a TFDS-backed
dataset does, so image folders work on machines without TensorFlow.
"""

from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import BAD_IMAGE_CHOICES
from cnnjax.data.loader import Dataset, Split, list_datasets, load_dataset
from cnnjax.data.preprocess import PREPROCESS_CHOICES, compute_preprocess_stats
from cnnjax.data.tfds_loader import DatasetNotPreparedError

__all__ = [
    "BAD_IMAGE_CHOICES",
    "PREPROCESS_CHOICES",
    "DataError",
    "Dataset",
    "DatasetNotPreparedError",
    "Split",
    "compute_preprocess_stats",
    "list_datasets",
    "load_dataset",
]
