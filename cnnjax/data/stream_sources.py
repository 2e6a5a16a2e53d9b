"""Where streamed examples come from: a TFDS set or an image folder, as (encoded image, label).

A source knows its splits' sizes, its classes and channel count, and gives
each process its share of a split as a ``tf.data.Dataset`` of encoded images
(:mod:`cnnjax.data.streaming` decodes and batches them). TensorFlow is
imported inside the functions only.

**Per-host sharding.** A TFDS split is divided with
``tfds.split_for_jax_process`` (``tfds.even_splits``): process ``i`` of ``P``
reads a contiguous range of about ``1/P`` of the examples, and TFDS turns that
range into file instructions, so a process opens only the record files that
hold its range (whole files, plus a part of at most one file at each end).
Unlike file-level sharding with ``tfds.ReadConfig(input_context=...)``, this
works when a split has fewer files than processes (small sets, split slices
such as ``train[:90%]``) and gives every process the same number of examples
(within one), which keeps epochs and evaluation batch counts in step across
hosts. TFDS shuffles examples when it writes a set, so a contiguous range is
a fair sample. An image folder's file list (sorted by class) is divided with
a stride (file ``k`` goes to process ``k mod P``), which keeps every
process's classes balanced; a training stream reads it in a fresh numpy
permutation each epoch, so the file at any stream position is known
(:meth:`FolderSource.file_at`, which names undecodable images).

**Tarballs.** Random access needs an uncompressed archive: a ``.tar`` is read
in place; a compressed one (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``)
is decompressed once into ``$CNNJAX_CACHE_DIR`` (default
``~/.cache/cnnjax``) and read from there. For very large folders prefer a
directory or a plain ``.tar`` (:mod:`cnnjax.data.archive`).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnjax.data import archive
from cnnjax.data.decode import GRAY_MODES
from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import IMAGE_FOLDER, bad_image_error, select_image_files
from cnnjax.data.loader import config_value
from cnnjax.data.splits import DEFAULT_SEED, SPLIT_NAMES, stratified_subset
from cnnjax.data.stream_checks import bad_images_choice

_CHANNEL_PROBE = 64  # image-folder files whose colour mode decides the channel count
_READ_RUN = 32  # tar members read per Python call


def parallel_map(ds, fn):
    """``ds.map`` in parallel, traced as plain TF (no AutoGraph: the functions
    use ``tf.cond`` explicitly, and conversion costs time on every stream)."""
    import tensorflow as tf

    return ds.map(tf.autograph.experimental.do_not_convert(fn), num_parallel_calls=tf.data.AUTOTUNE)


class TfdsSource:
    """A TFDS set read as (encoded image, label) with ``SkipDecoding``."""

    def __init__(self, data_config: Any):
        from cnnjax.data import tfds_loader

        limits = (config_value(data_config, "max_train_examples"), config_value(data_config, "max_eval_examples"))
        if any(limit is not None for limit in limits):
            raise ValueError(
                "data.max_train_examples / data.max_eval_examples apply to in-memory and image-folder data; "
                "for a streamed TFDS set pick the examples with a split string instead, e.g. "
                "data.train_split='train[:10000]'."
            )
        self.name = data_config.name
        self.tfds = tfds_loader.import_tfds()
        self.builder = tfds_loader.get_builder(
            self.tfds,
            self.name,
            config_value(data_config, "data_dir") or None,
            bool(config_value(data_config, "download", False)),
            check_features=self._keys,
        )
        info = self.builder.info
        self.image_key, self.label_key = self._keys(info)
        channels = info.features[self.image_key].shape[-1]
        self.channels = int(channels) if channels else 3
        label = info.features[self.label_key]
        self.class_names = tuple(str(n) for n in label.names)
        self.splits = tfds_loader.default_splits(self.name, available=tuple(info.splits))
        for split in SPLIT_NAMES:
            override = config_value(data_config, f"{split}_split")
            if override is not None:
                self.splits[split] = override

    def _keys(self, info) -> tuple[str, str]:
        """(image key, label key); the image must be an encoded Image feature."""
        tfds = self.tfds
        image_key, label_key = info.supervised_keys or ("image", "label")
        features = info.features
        names = ", ".join(sorted(features.keys()))
        if not isinstance(image_key, str) or image_key not in features or not isinstance(
            features[image_key], tfds.features.Image
        ):
            images = [k for k in features.keys() if isinstance(features[k], tfds.features.Image)]
            raise ValueError(
                f"TFDS set {info.full_name!r} has no image feature {image_key!r} to stream (its features: {names}; "
                f"image features among them: {', '.join(images) or 'none'}). Streaming needs a "
                "tfds.features.Image; use data.streaming=False for other sets."
            )
        if not isinstance(label_key, str) or label_key not in features or not isinstance(
            features[label_key], tfds.features.ClassLabel
        ):
            raise ValueError(f"TFDS set {info.full_name!r} has no class label {label_key!r} (its features: {names}).")
        return image_key, label_key

    def _count(self, split_arg) -> int:
        return int(self.builder.info.splits[split_arg].num_examples)

    def num_examples(self, split: str) -> int:
        return self._count(self.splits[split])

    def process_counts(self, split: str, process_count: int) -> list[int]:
        subsplits = self.tfds.even_splits(self.splits[split], n=process_count)
        return [self._count(sub) for sub in subsplits]

    def file_at(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None):
        """A record has no file name: every position maps to None."""
        return lambda position: None

    def dataset(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None,
                repeat: bool = False):
        """(encoded, label) of this process's share; shuffled files when seeded; endless with ``repeat``."""
        tfds = self.tfds
        split_arg = tfds.split_for_jax_process(
            self.splits[split], process_index=process_index, process_count=process_count
        )
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
        ds = self.builder.as_dataset(
            split=split_arg,
            # A set written in a fixed order (disable_shuffling) refuses file shuffling.
            shuffle_files=shuffle_seed is not None and not self.builder.info.disable_shuffling,
            decoders={self.image_key: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
        ds = parallel_map(ds, lambda ex: (ex[self.image_key], ex[self.label_key]))
        # Without file shuffling the first records are read: a bounded read.
        ds = ds.take(limit) if limit is not None else ds
        return ds.repeat() if repeat else ds


class FolderSource:
    """An image folder (directory or tar archive) read file by file."""

    def __init__(self, data_config: Any):
        path = config_value(data_config, "path")
        if not path:
            raise DataError("data.path (an image folder or tar archive) is required when data.name='image_folder'.")
        root = Path(path).expanduser()
        if not root.exists():
            raise DataError(
                f"Image folder path {str(root)!r} does not exist; data.path must be a directory or a tar archive "
                "laid out as root/<split>/<class>/<image> with split in train, validation (val), test."
            )
        self.name = IMAGE_FOLDER
        self.root = root
        self.bad_images = bad_images_choice(data_config)
        if root.is_dir():
            listing = archive.ImageFiles(root)
            files = listing.files
            listing.close()
            self.tar = None
            self.members: dict[str, tuple[int, int]] = {}
        elif tarfile.is_tarfile(root):
            self.tar = archive.plain_tar(root)
            self.members = archive.tar_index(self.tar)
            files = sorted(f for f in self.members if archive.is_image_file(f))
        else:
            raise archive.not_a_folder_error(root)
        self.names, self.labels, self.class_names = select_image_files(
            files,
            str(root),
            validation_fraction=config_value(data_config, "validation_fraction", 0.1),
            test_fraction=config_value(data_config, "test_fraction", 0.1),
            max_examples={
                "train": config_value(data_config, "max_train_examples"),
                "validation": config_value(data_config, "max_eval_examples"),
                "test": config_value(data_config, "max_eval_examples"),
            },
        )
        self._reader = archive.MemberReader(self.tar) if self.tar is not None else None
        self.channels = self._probe_channels()

    def read_bytes(self, relpath: str) -> bytes:
        if self._reader is None:
            return (self.root / relpath).read_bytes()
        return self._reader.read(*self.members[relpath])

    def _probe_channels(self) -> int:
        """1 when the probed training images are all grayscale, else 3."""
        from PIL import Image

        for index in self._stratified("train", _CHANNEL_PROBE):
            name = self.names["train"][index]
            try:
                with Image.open(io.BytesIO(self.read_bytes(name))) as image:
                    mode = image.mode
            except (OSError, ValueError, Image.DecompressionBombError):
                if self.bad_images == "skip":
                    continue
                raise bad_image_error(name, str(self.root)) from None
            if mode not in GRAY_MODES:
                return 3
        return 1

    def _stratified(self, split: str, count: int) -> np.ndarray:
        return stratified_subset(self.labels[split], count, seed=DEFAULT_SEED)

    def num_examples(self, split: str) -> int:
        return len(self.names[split])

    def process_counts(self, split: str, process_count: int) -> list[int]:
        total = self.num_examples(split)
        return [len(range(i, total, process_count)) for i in range(process_count)]

    def _rows(self, split: str, process_index: int, process_count: int, limit) -> np.ndarray:
        """This process's files of ``split`` (indices into ``names[split]``), or a stratified ``limit``."""
        if limit is not None:
            return self._stratified(split, limit)
        return np.arange(process_index, self.num_examples(split), process_count, dtype=np.int64)

    @staticmethod
    def _epoch_order(count: int, shuffle_seed: int | None, epoch: int) -> np.ndarray:
        """The order (indices into the rows) in which an epoch reads them: a fresh permutation
        per epoch when seeded. Drawn with numpy so that :meth:`file_at` can name the file at
        any stream position."""
        if shuffle_seed is None:
            return np.arange(count, dtype=np.int64)
        return np.random.default_rng([shuffle_seed, epoch]).permutation(count).astype(np.int64)

    def file_at(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None):
        """``position -> relative path`` of the file read at that position of :meth:`dataset`'s stream
        (the same arguments, epochs counted on with ``repeat``)."""
        rows = self._rows(split, process_index, process_count, limit)
        names = self.names[split]
        orders: dict[int, np.ndarray] = {}

        def name(position: int) -> str:
            epoch, index = divmod(int(position), len(rows))
            if epoch not in orders:
                orders.clear()  # positions are asked for in increasing order: one epoch kept
                orders[epoch] = self._epoch_order(len(rows), shuffle_seed, epoch)
            return names[rows[orders[epoch][index]]]

        return name

    def dataset(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None,
                repeat: bool = False):
        """(encoded, label) of this process's files (every ``process_count``-th), permuted per
        epoch when seeded; endless with ``repeat``."""
        import tensorflow as tf

        rows = self._rows(split, process_index, process_count, limit)
        count = len(rows)
        labels = tf.constant(self.labels[split][rows])
        if shuffle_seed is None:
            order = tf.data.Dataset.range(count)
            order = order.repeat() if repeat else order
        else:
            epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)

            def permutation(epoch):
                indices = tf.numpy_function(
                    lambda e: self._epoch_order(count, shuffle_seed, int(e)), [epoch], tf.int64, stateful=False
                )
                return tf.ensure_shape(indices, [count])

            order = epochs.map(permutation).unbatch()
        if self.tar is None:
            paths = tf.constant([str(self.root / self.names[split][i]) for i in rows])
            return parallel_map(order, lambda i: (tf.io.read_file(tf.gather(paths, i)), tf.gather(labels, i)))
        spans = tf.constant(np.array([self.members[self.names[split][i]] for i in rows], np.int64).reshape(-1, 2))

        def read(indices):
            data = tf.numpy_function(self._reader.read_many, [tf.gather(spans, indices)], tf.string, stateful=False)
            return tf.ensure_shape(data, indices.shape), tf.gather(labels, indices)

        # One Python call reads a run of files: per-call overhead and the GIL
        # would otherwise cap the rate of small images.
        return parallel_map(order.batch(_READ_RUN), read).unbatch()


def source_of(data_config: Any):
    name = config_value(data_config, "name")
    if not name:
        raise ValueError("data.name is required: 'image_folder' or a TFDS image set such as 'imagenet2012'.")
    if name == IMAGE_FOLDER:
        return FolderSource(data_config)
    return TfdsSource(data_config)


