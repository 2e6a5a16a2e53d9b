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

**Per-host sharding** is the sources' (:mod:`cnnjax.data.stream_sources`): each
process reads its own share of a split, every process the same number of examples
(within one).

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

**Normalisation statistics** (:func:`streaming_info`, from
:mod:`cnnjax.data.stream_stats`): ImageNet's for ImageNet-like RGB sets, else an
estimate from a bounded sample of the training split; float32 ``(1, 1, C)`` in
the [0, 1] pixel scale, because :func:`cnnjax.data.pipeline.normalize` computes
``(x / 255 - mean) / std`` (the convention of the in-memory
:class:`cnnjax.data.Dataset` too).

**Undecodable images** (``data.bad_images``, :mod:`cnnjax.data.stream_checks`):
with ``skip`` an example whose image cannot be decoded is left out of the stream
(and of the statistics sample), and an image folder's dropped files are logged
and appended to the ``skipped`` list the caller passes; with ``error`` (the
default) it stops the stream with a :class:`~cnnjax.data.DataError` naming the
file (a TFDS set: the data set and split). Only the files the statistics sample
and the channel probe read are checked before training starts: checking every
image would cost a full pass over the data.

TensorFlow and TFDS are imported inside the functions only, so importing this
module (and :mod:`cnnjax.data`) works on machines without TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

from cnnjax.data import host_augment
from cnnjax.data.loader import config_value
from cnnjax.data.preprocess import PREPROCESS_CHOICES
from cnnjax.data.splits import SPLIT_NAMES
from cnnjax.data.stream_checks import checked, drop_undecodable
from cnnjax.data.stream_sources import TfdsSource, parallel_map, source_of
from cnnjax.data.stream_stats import DEFAULT_STATS_EXAMPLES, normalisation_stats

# Preprocessing that makes sense for random crops of images of any size; a
# per-pixel mean image does not.
STREAMING_PREPROCESS = tuple(p for p in PREPROCESS_CHOICES if p != "mean_image")


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


def _image_size(data_config: Any) -> int:
    size = config_value(data_config, "image_size", 224)
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


def _tf_options(tf):
    options = tf.data.Options()
    options.deterministic = True  # Same seed, same batches, whatever the thread timing.
    # One thread per op: tf.data runs many elements in parallel instead.
    options.threading.max_intra_op_parallelism = 1
    return options


# -- public API ---------------------------------------------------------------------------
def streaming_info(
    data_config: Any, *, stats_examples: int = DEFAULT_STATS_EXAMPLES, skipped: list[str] | None = None
) -> StreamInfo:
    """Sizes, classes and normalisation statistics of a streamed data set.

    Reads split metadata (TFDS) or the file list (image folder), and at most
    ``stats_examples`` training images when the statistics are estimated.

    Args:
      data_config: ``config.data`` (keys: ``name``, ``data_dir``, ``download``,
        ``path``, ``*_split``, ``image_size``, ``preprocess``, ...).
      stats_examples: Training images sampled to estimate mean/std for sets
        that are not ImageNet-like.
      skipped: With ``data.bad_images='skip'``, the sample's undecodable files
        are appended here.

    Returns:
      The :class:`StreamInfo`.

    Raises:
      ValueError: Bad configuration (unknown preprocess, image_size < 1, a
        TFDS set without an image feature, ...).
      FileNotFoundError: The image folder does not exist.
      DatasetNotPreparedError: A TFDS set is not prepared and download is off.
    """
    size = _image_size(data_config)
    preprocess = config_value(data_config, "preprocess", "none")
    if preprocess not in STREAMING_PREPROCESS:
        raise ValueError(
            f"data.preprocess={preprocess!r} cannot be used with streaming input; valid choices: "
            f"{', '.join(STREAMING_PREPROCESS)}."
        )
    source = source_of(data_config)
    channels = source.channels
    mean, std, stats_source = normalisation_stats(source, data_config, preprocess, size, stats_examples, skipped)
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


def train_stream(
    data_config: Any,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    skipped: list[str] | None = None,
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
      skipped: With ``data.bad_images='skip'``, each dropped file's name is
        appended here once.

    Yields:
      ``{'image': uint8 (B, S, S, C), 'label': int32 (B,)}`` numpy batches,
      forever (epochs follow one another; each is reshuffled).
    """
    import tensorflow as tf

    index, count, local_batch = _processes(process_index, process_count, global_batch_size)
    size = _image_size(data_config)
    source = source_of(data_config)
    if source.process_counts("train", count)[index] < local_batch:
        raise ValueError(
            f"Process {index} of {count} holds {source.process_counts('train', count)[index]} training examples, "
            f"fewer than its batch of {local_batch}."
        )
    augment = getattr(data_config, "augment", None)
    flip = bool(config_value(augment, "flip", False)) if augment is not None else False
    shuffle_seed = _derived_seed(seed, index, 0) % 2**31
    ds = source.dataset("train", index, count, shuffle_seed=shuffle_seed, repeat=True)
    if isinstance(source, TfdsSource):
        # Folder file lists are fully permuted each epoch; TFDS records are only
        # shuffled by file, so examples are mixed in a buffer as well.
        ds = ds.shuffle(int(config_value(data_config, "shuffle_buffer", 10_000)), seed=shuffle_seed)
    base = _derived_seed(seed, index, 1)

    def view(position, example):
        encoded, label = example
        example_seed = tf.stack([tf.constant(base, tf.int64), position])
        image = host_augment.random_resized_crop(
            encoded, example_seed, size=size, channels=source.channels, flip=flip
        )
        return {"image": image, "label": tf.cast(label, tf.int32), "position": position}

    ds = drop_undecodable(parallel_map(ds.enumerate(), view), data_config)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    # The file at each position: positions count the source's read order (before any TFDS buffer).
    file_at = source.file_at("train", index, count, shuffle_seed=shuffle_seed)
    return checked(ds.with_options(_tf_options(tf)).as_numpy_iterator(), source, "train", data_config, file_at,
                   local_batch, skipped=skipped)


def eval_stream(
    data_config: Any,
    split: str,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    skipped: list[str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One ordered pass over this process's share of ``split``, padded with a mask.

    Args:
      data_config: ``config.data``.
      split: ``train``, ``validation`` or ``test``.
      global_batch_size: Batch size over all processes.
      process_index: This process (default ``jax.process_index()``).
      process_count: Number of processes (default ``jax.process_count()``).
      skipped: As for :func:`train_stream`.

    Yields:
      ``{'image': uint8 (B, S, S, C), 'label': int32 (B,), 'mask': float32
      (B,)}``; padding rows are zeros with mask 0. Every process yields
      ``max(1, ceil(max_p n_p / B))`` batches, ``n_p`` being process p's
      share, so collective steps stay in step.
    """
    _check_split(split)
    index, count, local_batch = _processes(process_index, process_count, global_batch_size)
    size = _image_size(data_config)
    source = source_of(data_config)
    counts = source.process_counts(split, count)
    num_batches = max(1, -(-max(counts) // local_batch))
    channels = source.channels
    real = (_eval_batches(source, data_config, split, index, count, size, local_batch, counts[index], skipped)
            if counts[index] else iter(()))
    return _padded(real, num_batches, local_batch, (size, size, channels))


def _eval_batches(source, data_config, split, index, count, size, local_batch, total, skipped) -> Iterator[dict]:
    import tensorflow as tf

    ds = source.dataset(split, index, count, shuffle_seed=None)
    ds = parallel_map(
        ds.enumerate(),
        lambda position, example: {
            "image": host_augment.center_crop(example[0], size=size, channels=source.channels),
            "label": tf.cast(example[1], tf.int32),
            "position": position,
        },
    )
    ds = drop_undecodable(ds, data_config).batch(local_batch).prefetch(tf.data.AUTOTUNE)
    file_at = source.file_at(split, index, count, shuffle_seed=None)
    return checked(ds.with_options(_tf_options(tf)).as_numpy_iterator(), source, split, data_config, file_at,
                   local_batch, total=total, skipped=skipped)


def _padded(batches: Iterable[dict], num_batches: int, batch_size: int, image_shape) -> Iterator[dict[str, np.ndarray]]:
    """Pads each batch to ``batch_size`` rows and appends empty batches up to ``num_batches``."""
    batches = iter(batches)
    empty = {"image": np.zeros((0, *image_shape), np.uint8), "label": np.zeros(0, np.int32)}
    for produced in itertools.count():
        batch = next(batches, None)
        if batch is None:
            if produced >= num_batches:
                return
            batch = empty
        n = len(batch["label"])
        pad = batch_size - n
        if not pad:  # Full batches pass through without a copy.
            yield {**batch, "mask": np.ones(n, np.float32)}
            continue
        yield {
            "image": np.concatenate([batch["image"], np.zeros((pad, *image_shape), np.uint8)]),
            "label": np.concatenate([batch["label"], np.zeros(pad, np.int32)]),
            "mask": np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]),
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
