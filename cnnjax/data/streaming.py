"""Streaming input: tf.data pipelines for data sets that do not fit in memory.

Used with ``data.streaming=True``, for a TFDS image set (``imagenet2012``,
``imagenette``, ...) or an image folder (``data.name='image_folder'``,
``data.path`` a directory or a tar archive laid out as in
:mod:`cnnjax.data.image_folder`). Each process reads only its own share of the
split, decodes and augments on the host and yields uint8 batches; the step
normalises on the device (:func:`cnnjax.data.pipeline.normalize`) with
:attr:`StreamInfo.mean` and :attr:`StreamInfo.std`. Typical use::

    info = streaming_info(config.data)
    batches = prefetch_to_device(
        train_stream(config.data, global_batch_size=config.batch_size, seed=config.seed),
        config.data.prefetch_batches, sharding)

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
process's classes balanced.

**Training** (:func:`train_stream`): shuffled with the seed (TFDS: file order
per epoch plus a ``data.shuffle_buffer`` example buffer; image folder: a fresh
permutation of this process's file list every epoch), repeated forever,
Inception-style random-resized crop to ``data.image_size`` (area 8%-100%,
aspect ratio 3/4-4/3) and, with ``data.augment.flip``, a random left-right
flip, done by :mod:`cnnjax.data.host_augment` on the host; full batches only.
Augmentation randomness is stateless, keyed by the seed, the process index and
the example's position in the stream, so the same seed gives the same batches.

**Evaluation** (:func:`eval_stream`): one ordered pass, central crop (the
shorter side resized to ``image_size / 0.875``, then the centre
``image_size`` square); the last batch is padded and every batch carries a
``mask`` (1 real, 0 padding) as :func:`cnnjax.data.pipeline.pad_for_eval`
does. Every process yields the same number of batches.

**Normalisation statistics** (:func:`streaming_info`): ImageNet's published
per-channel mean and std for RGB sets whose TFDS name starts with
``imagenet`` (and ``imagenette``, ``imagewang``); otherwise an estimate from
a bounded sample of the training split (``stats_examples`` images, the first
ones of a TFDS split, a seeded class-stratified choice of a folder's files),
taken on the evaluation view at 64 px. Never a full pass over the data. Both
are float32 ``(1, 1, C)`` in the [0, 1] pixel scale, because
:func:`cnnjax.data.pipeline.normalize` computes ``(x / 255 - mean) / std``
(the convention of the in-memory :class:`cnnjax.data.Dataset` too).

**Tarballs.** Random access needs an uncompressed archive: a ``.tar`` is read
in place; a compressed one (``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``)
is decompressed once into ``$CNNJAX_CACHE_DIR`` (default
``~/.cache/cnnjax``) and read from there. For very large folders prefer a
directory or a plain ``.tar``.

TensorFlow and TFDS are imported inside the functions only, so importing this
module (and :mod:`cnnjax.data`) works on machines without TensorFlow.
"""

from __future__ import annotations

import bz2
import collections
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import lzma
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cnnjax.data import host_augment
from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import (
    _ARCHIVE_ERRORS,
    _GRAY_MODES,
    _archive_error,
    _is_candidate,
    _Reader,
    _strip_dot_slash,
    select_image_files,
)
from cnnjax.data.preprocess import PREPROCESS_CHOICES, compute_preprocess_stats
from cnnjax.data.splits import DEFAULT_SEED, SPLIT_NAMES, stratified_subset

IMAGE_FOLDER = "image_folder"
# Preprocessing that makes sense for random crops of images of any size; a
# per-pixel mean image does not.
STREAMING_PREPROCESS = tuple(p for p in PREPROCESS_CHOICES if p != "mean_image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # [0, 1] pixel scale, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_LIKE_PREFIXES = ("imagenet", "imagenette", "imagewang")
DEFAULT_STATS_EXAMPLES = 512
STATS_IMAGE_SIZE = 64  # side of the sampled images the statistics are taken on
_CHANNEL_PROBE = 64  # image-folder files whose colour mode decides the channel count
_READ_RUN = 32  # tar members read per Python call


@dataclasses.dataclass(frozen=True, eq=False)
class StreamInfo:
    """What the training loop needs to know about a streamed data set.

    Attributes:
      name: ``data.name``.
      num_classes: Number of classes; labels are in ``range(num_classes)``.
      class_names: Name of each class index.
      num_train_examples: Examples in the training split (all processes).
      num_eval_examples: Split name (``validation``, ``test``) -> examples.
      image_shape: ``(image_size, image_size, channels)`` of every batch image.
      mean: float32 ``(1, 1, C)``, [0, 1] pixel scale: the step applies
        ``(x / 255 - mean) / std`` (:func:`cnnjax.data.pipeline.normalize`).
      std: float32 ``(1, 1, C)``, same convention.
      stats_source: Where mean/std come from: ``'imagenet'``,
        ``'sample of N training images'`` or ``'none'`` (preprocess none).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    num_train_examples: int
    num_eval_examples: dict[str, int]
    image_shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    stats_source: str


def _get(config: Any, key: str, default: Any = None) -> Any:
    value = getattr(config, key, None)
    return default if value is None else value


def _image_size(data_config: Any) -> int:
    size = _get(data_config, "image_size", 224)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"data.image_size must be an integer >= 1, got {size!r}.")
    return int(size)


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise ValueError(f"Unknown split {split!r}; valid choices: {', '.join(SPLIT_NAMES)}.")


def _processes(process_index: int | None, process_count: int | None, global_batch_size: int) -> tuple[int, int, int]:
    """Returns (process_index, process_count, per-process batch size), checked."""
    index = jax.process_index() if process_index is None else int(process_index)
    count = jax.process_count() if process_count is None else int(process_count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_index must be in [0, process_count), got {index} of {count}.")
    if global_batch_size < 1 or global_batch_size % count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of process_count={count}."
        )
    return index, count, global_batch_size // count


def _derived_seed(seed: int, process_index: int, purpose: int) -> int:
    """A 63-bit seed from (seed, process, purpose): independent streams per process."""
    state = np.random.SeedSequence([int(seed) % 2**32, process_index, purpose]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _map(ds, fn):
    """``ds.map`` in parallel, traced as plain TF (no AutoGraph: the functions
    use ``tf.cond`` explicitly, and conversion costs time on every stream)."""
    import tensorflow as tf

    return ds.map(tf.autograph.experimental.do_not_convert(fn), num_parallel_calls=tf.data.AUTOTUNE)


def _tf_options(tf):
    options = tf.data.Options()
    options.deterministic = True  # Same seed, same batches, whatever the thread timing.
    # One thread per op: tf.data runs many elements in parallel instead.
    options.threading.max_intra_op_parallelism = 1
    return options


# -- sources: where the encoded bytes and labels come from ------------------------------
class _TfdsSource:
    """A TFDS set read as (encoded image, label) with ``SkipDecoding``."""

    def __init__(self, data_config: Any):
        from cnnjax.data import tfds_loader

        if _get(data_config, "max_train_examples") is not None or _get(data_config, "max_eval_examples") is not None:
            raise ValueError(
                "data.max_train_examples / data.max_eval_examples apply to in-memory and image-folder data; "
                "for a streamed TFDS set pick the examples with a split string instead, e.g. "
                "data.train_split='train[:10000]'."
            )
        self.name = data_config.name
        self.tfds = tfds_loader._import_tfds()
        self.builder = tfds_loader._get_builder(
            self.tfds,
            self.name,
            _get(data_config, "data_dir") or None,
            bool(_get(data_config, "download", False)),
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
            override = _get(data_config, f"{split}_split")
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

    def dataset(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None):
        """(encoded, label) of this process's share; shuffled files when seeded."""
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
        ds = _map(ds, lambda ex: (ex[self.image_key], ex[self.label_key]))
        # Without file shuffling the first records are read: a bounded read.
        return ds.take(limit) if limit is not None else ds


def _cache_dir() -> Path:
    return Path(os.environ.get("CNNJAX_CACHE_DIR") or Path.home() / ".cache" / "cnnjax")


def _decompressor(path: Path):
    """The stream opener of a compressed archive, or None for a plain one."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open
    if magic.startswith(b"BZh"):
        return bz2.open
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open
    return None


def _plain_tar(path: Path) -> Path:
    """``path`` itself when uncompressed, else its decompressed copy in the cache."""
    opener = _decompressor(path)
    if opener is None:
        return path
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".gz", ".bz2", ".xz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    cached = _cache_dir() / f"{name}-{key}.tar"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: concurrent processes never see half a file.
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as dst:
            try:
                with opener(path, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
            except _ARCHIVE_ERRORS as err:
                os.unlink(dst.name)
                raise _archive_error(path, err) from None
        os.replace(dst.name, cached)
    return cached


_TAR_INDEXES: dict[tuple[str, int, int], dict[str, tuple[int, int]]] = {}


def _tar_index(tar: Path) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) of a plain tar, for every regular file.

    Walking the headers of a large archive takes seconds, so the index is kept
    for the process and on disk in the cache directory (keyed by the archive's
    path, size and modification time).
    """
    stat = tar.stat()
    key = (str(tar.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _TAR_INDEXES:
        return _TAR_INDEXES[key]
    digest = hashlib.sha1("|".join(map(str, key)).encode()).hexdigest()[:16]
    stored = _cache_dir() / f"{tar.name}-{digest}.index.json"
    if stored.exists():
        index = {name: (offset, size) for name, offset, size in json.loads(stored.read_text())}
    else:
        try:
            with tarfile.open(tar, "r:") as archive:
                index = {_strip_dot_slash(m.name): (m.offset_data, m.size) for m in archive.getmembers() if m.isfile()}
        except _ARCHIVE_ERRORS as err:
            raise _archive_error(tar, err) from None
        try:
            stored.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=stored.parent, delete=False) as f:
                json.dump([[name, *span] for name, span in index.items()], f)
            os.replace(f.name, stored)
        except OSError:
            pass  # A read-only cache only costs the next process the walk.
    _TAR_INDEXES[key] = index
    return index


class _FolderSource:
    """An image folder (directory or tar archive) read file by file."""

    def __init__(self, data_config: Any):
        path = _get(data_config, "path")
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
        if root.is_dir():
            files = _Reader(root).files
            self.tar = None
            self.members: dict[str, tuple[int, int]] = {}
        elif tarfile.is_tarfile(root):
            self.tar = _plain_tar(root)
            self.members = _tar_index(self.tar)
            files = sorted(f for f in self.members if _is_candidate(f))
        else:
            raise DataError(f"Image folder path {str(root)!r} (data.path) is neither a directory nor a tar archive.")
        self.names, self.labels, self.class_names = select_image_files(
            files,
            str(root),
            validation_fraction=_get(data_config, "validation_fraction", 0.1),
            test_fraction=_get(data_config, "test_fraction", 0.1),
            max_examples={
                "train": _get(data_config, "max_train_examples"),
                "validation": _get(data_config, "max_eval_examples"),
                "test": _get(data_config, "max_eval_examples"),
            },
        )
        self._fd: int | None = None
        self.channels = self._probe_channels()

    def read_bytes(self, relpath: str) -> bytes:
        if self.tar is None:
            return (self.root / relpath).read_bytes()
        offset, size = self.members[relpath]
        return self._pread(offset, size)

    def _pread(self, offset, size) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.tar, os.O_RDONLY)
        return os.pread(self._fd, int(size), int(offset))  # No shared file position: thread-safe.

    def _pread_many(self, spans: np.ndarray) -> np.ndarray:
        return np.array([self._pread(offset, size) for offset, size in spans], dtype=object)

    def _probe_channels(self) -> int:
        """1 when the probed training images are all grayscale, else 3."""
        from PIL import Image

        for index in self._stratified("train", _CHANNEL_PROBE):
            with Image.open(io.BytesIO(self.read_bytes(self.names["train"][index]))) as image:
                if image.mode not in _GRAY_MODES:
                    return 3
        return 1

    def _stratified(self, split: str, count: int) -> np.ndarray:
        return stratified_subset(self.labels[split], count, seed=DEFAULT_SEED)

    def num_examples(self, split: str) -> int:
        return len(self.names[split])

    def process_counts(self, split: str, process_count: int) -> list[int]:
        total = self.num_examples(split)
        return [len(range(i, total, process_count)) for i in range(process_count)]

    def dataset(self, split: str, process_index: int, process_count: int, *, shuffle_seed: int | None, limit=None):
        """(encoded, label) of this process's files (every ``process_count``-th)."""
        import tensorflow as tf

        if limit is not None:
            rows = self._stratified(split, limit)
        else:
            rows = np.arange(process_index, self.num_examples(split), process_count)
        labels = self.labels[split][rows]
        if self.tar is None:
            paths = np.array([str(self.root / self.names[split][i]) for i in rows])
            ds = tf.data.Dataset.from_tensor_slices((paths, labels))
            if shuffle_seed is not None:
                ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
            return _map(ds, lambda path, label: (tf.io.read_file(path), label))
        spans = np.array([self.members[self.names[split][i]] for i in rows], np.int64).reshape(-1, 2)
        ds = tf.data.Dataset.from_tensor_slices((spans, labels))
        if shuffle_seed is not None:
            ds = ds.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)

        def read(spans, labels):
            data = tf.numpy_function(self._pread_many, [spans], tf.string, stateful=False)
            return tf.ensure_shape(data, labels.shape), labels

        # One Python call reads a run of files: per-call overhead and the GIL
        # would otherwise cap the rate of small images.
        return _map(ds.batch(_READ_RUN), read).unbatch()


def _source(data_config: Any):
    name = _get(data_config, "name")
    if not name:
        raise ValueError("data.name is required: 'image_folder' or a TFDS image set such as 'imagenet2012'.")
    if name == IMAGE_FOLDER:
        return _FolderSource(data_config)
    return _TfdsSource(data_config)


# -- public API ---------------------------------------------------------------------------
def _is_imagenet_like(name: str) -> bool:
    base = name.split(":")[0].split("/")[0]
    return base.startswith(IMAGENET_LIKE_PREFIXES)


def streaming_info(data_config: Any, *, stats_examples: int = DEFAULT_STATS_EXAMPLES) -> StreamInfo:
    """Sizes, classes and normalisation statistics of a streamed data set.

    Reads split metadata (TFDS) or the file list (image folder), and at most
    ``stats_examples`` training images when the statistics are estimated.

    Args:
      data_config: ``config.data`` (keys: ``name``, ``data_dir``, ``download``,
        ``path``, ``*_split``, ``image_size``, ``preprocess``, ...).
      stats_examples: Training images sampled to estimate mean/std for sets
        that are not ImageNet-like.

    Returns:
      The :class:`StreamInfo`.

    Raises:
      ValueError: Bad configuration (unknown preprocess, image_size < 1, a
        TFDS set without an image feature, ...).
      FileNotFoundError: The image folder does not exist.
      DatasetNotPreparedError: A TFDS set is not prepared and download is off.
    """
    size = _image_size(data_config)
    preprocess = _get(data_config, "preprocess", "none")
    if preprocess not in STREAMING_PREPROCESS:
        raise ValueError(
            f"data.preprocess={preprocess!r} cannot be used with streaming input; valid choices: "
            f"{', '.join(STREAMING_PREPROCESS)}."
        )
    source = _source(data_config)
    channels = source.channels
    if preprocess == "none":
        mean, std = np.zeros((1, 1, channels), np.float32), np.ones((1, 1, channels), np.float32)
        stats_source = "none"
    elif _is_imagenet_like(source.name) and channels == 3:
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 1, 3)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 1, 3)
        if preprocess == "channel_mean":
            std = np.ones_like(std)
        stats_source = "imagenet"
    else:
        sample = _sample_images(source, size, stats_examples)
        mean, std = compute_preprocess_stats(sample, preprocess)
        stats_source = f"sample of {len(sample)} training images"
    return StreamInfo(
        name=source.name,
        num_classes=len(source.class_names),
        class_names=source.class_names,
        num_train_examples=source.num_examples("train"),
        num_eval_examples={split: source.num_examples(split) for split in ("validation", "test")},
        image_shape=(size, size, channels),
        mean=mean,
        std=std,
        stats_source=stats_source,
    )


def _sample_images(source, size: int, count: int) -> np.ndarray:
    """Up to ``count`` training images in the evaluation view, uint8 (N, s, s, C).

    ``s = min(size, STATS_IMAGE_SIZE)``: pixel statistics barely depend on the
    resolution (a bilinear downscale without antialiasing samples pixels), and
    the sample stays a few MB.
    """

    if count < 1:
        raise ValueError(f"stats_examples must be >= 1, got {count}.")
    size = min(size, STATS_IMAGE_SIZE)
    ds = source.dataset("train", 0, 1, shuffle_seed=None, limit=count)
    ds = _map(ds, lambda encoded, label: host_augment.center_crop(encoded, size=size, channels=source.channels))
    images = [batch for batch in ds.batch(64).as_numpy_iterator()]
    if not images:
        raise ValueError(f"The training split of {source.name!r} is empty.")
    return np.concatenate(images)


def train_stream(
    data_config: Any,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled, augmented training batches of this process's share.

    Args:
      data_config: ``config.data``; reads ``image_size``, ``shuffle_buffer``,
        ``augment.flip`` and the source keys.
      global_batch_size: Batch size over all processes; each process yields
        ``global_batch_size // process_count`` examples per batch.
      seed: Shuffling and augmentation seed.
      process_index: This process (default ``jax.process_index()``).
      process_count: Number of processes (default ``jax.process_count()``).

    Yields:
      ``{'image': uint8 (B, S, S, C), 'label': int32 (B,)}`` numpy batches,
      forever (epochs follow one another; each is reshuffled).
    """
    import tensorflow as tf

    index, count, local_batch = _processes(process_index, process_count, global_batch_size)
    size = _image_size(data_config)
    source = _source(data_config)
    if source.process_counts("train", count)[index] < local_batch:
        raise ValueError(
            f"Process {index} of {count} holds {source.process_counts('train', count)[index]} training examples, "
            f"fewer than its batch of {local_batch}."
        )
    augment = getattr(data_config, "augment", None)
    flip = bool(_get(augment, "flip", False)) if augment is not None else False
    shuffle_seed = _derived_seed(seed, index, 0) % 2**31
    ds = source.dataset("train", index, count, shuffle_seed=shuffle_seed).repeat()
    if isinstance(source, _TfdsSource):
        # Folder file lists are fully permuted each epoch; TFDS records are only
        # shuffled by file, so examples are mixed in a buffer as well.
        ds = ds.shuffle(int(_get(data_config, "shuffle_buffer", 10_000)), seed=shuffle_seed)
    base = _derived_seed(seed, index, 1)

    def view(position, example):
        encoded, label = example
        example_seed = tf.stack([tf.constant(base, tf.int64), position])
        image = host_augment.random_resized_crop(
            encoded, example_seed, size=size, channels=source.channels, flip=flip
        )
        return {"image": image, "label": tf.cast(label, tf.int32)}

    ds = _map(ds.enumerate(), view)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_tf_options(tf)).as_numpy_iterator()


def eval_stream(
    data_config: Any,
    split: str,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over this process's share of ``split``, padded with a mask.

    Args:
      data_config: ``config.data``.
      split: ``train``, ``validation`` or ``test``.
      global_batch_size: Batch size over all processes.
      process_index: This process (default ``jax.process_index()``).
      process_count: Number of processes (default ``jax.process_count()``).

    Yields:
      ``{'image': uint8 (B, S, S, C), 'label': int32 (B,), 'mask': float32
      (B,)}``; padding rows are zeros with mask 0. Every process yields
      ``max(1, ceil(max_p n_p / B))`` batches, ``n_p`` being process p's
      share, so collective steps stay in step.
    """
    _check_split(split)
    index, count, local_batch = _processes(process_index, process_count, global_batch_size)
    size = _image_size(data_config)
    source = _source(data_config)
    counts = source.process_counts(split, count)
    num_batches = max(1, -(-max(counts) // local_batch))
    channels = source.channels
    real = _eval_batches(source, split, index, count, size, local_batch) if counts[index] else iter(())
    return _padded(real, num_batches, local_batch, (size, size, channels))


def _eval_batches(source, split, index, count, size, local_batch) -> Iterator[dict[str, np.ndarray]]:
    import tensorflow as tf

    ds = source.dataset(split, index, count, shuffle_seed=None)
    ds = _map(
        ds,
        lambda encoded, label: {
            "image": host_augment.center_crop(encoded, size=size, channels=source.channels),
            "label": tf.cast(label, tf.int32),
        },
    )
    ds = ds.batch(local_batch).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_tf_options(tf)).as_numpy_iterator()


def _padded(batches: Iterable[dict], num_batches: int, batch_size: int, image_shape) -> Iterator[dict[str, np.ndarray]]:
    """Pads each batch to ``batch_size`` rows and appends empty batches up to ``num_batches``."""
    produced = 0
    for batch in batches:
        n = len(batch["label"])
        pad = batch_size - n
        if not pad:  # Full batches pass through without a copy.
            yield {**batch, "mask": np.ones(n, np.float32)}
            produced += 1
            continue
        yield {
            "image": np.concatenate([batch["image"], np.zeros((pad, *image_shape), np.uint8)]),
            "label": np.concatenate([batch["label"], np.zeros(pad, np.int32)]),
            "mask": np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]),
        }
        produced += 1
    for _ in range(num_batches - produced):
        yield {
            "image": np.zeros((batch_size, *image_shape), np.uint8),
            "label": np.zeros(batch_size, np.int32),
            "mask": np.zeros(batch_size, np.float32),
        }


def prefetch_to_device(
    iterator: Iterable[Any], size: int, sharding: jax.sharding.Sharding | None = None
) -> Iterator[Any]:
    """Yields the batches of ``iterator`` already on device, ``size`` ahead.

    Transfers are asynchronous, so while the step runs on batch ``t`` the
    batches ``t+1 .. t+size`` are being copied. Each batch is a pytree of host
    arrays holding this process's share. With a ``sharding`` every leaf becomes
    one global ``jax.Array`` through ``jax.make_array_from_process_local_data``:
    on one process that is a plain placement, on several the process-local
    rows are this process's part of the global batch (leading axis), so the
    same call serves both. Without a sharding, ``jax.device_put`` to the
    default device.

    Args:
      iterator: Host batches (e.g. :func:`train_stream`).
      size: Batches kept on the device ahead of use (``data.prefetch_batches``).
      sharding: Optional ``jax.sharding.Sharding`` for every leaf, e.g. a
        ``NamedSharding`` splitting the batch axis over a data mesh.

    Yields:
      The same batches as ``jax.Array`` pytrees, in order.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}.")
    if sharding is None:
        put = jax.device_put
    else:

        def put(batch):
            return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

    source = iter(iterator)
    queue: collections.deque = collections.deque(put(batch) for batch in itertools.islice(source, size))
    while queue:
        yield queue.popleft()
        queue.extend(put(batch) for batch in itertools.islice(source, 1))
