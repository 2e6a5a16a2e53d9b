"""Undecodable images in a stream (``data.bad_images``): stop naming the file, or skip and count it.

TensorFlow's decoding error names neither the file nor its place in the stream,
and ``ignore_errors`` drops an example without a word. So every stream carries
each example's ``position`` in its source's read order, and the source maps a
position to the file read there (``source.file_at``; an image folder's files
have names, a TFDS record has none):

* ``error`` (default): the pipeline runs as it is. When a batch fails, its
  files (the positions after the last delivered example) are decoded once more,
  one at a time, and the first that fails is named in a
  :class:`~cnnjax.data.DataError` that also offers ``skip``.
* ``skip``: failed examples are dropped inside tf.data (``ignore_errors``); a gap
  in the delivered positions names the dropped files, which are logged (the
  first :data:`LOGGED` of them) and appended, once each, to the caller's
  ``skipped`` list (``data/skipped_images`` and ``data/skipped_first`` in
  ``summary.json``, as for an in-memory image folder).

Both cost one int64 per example and a numpy comparison per batch when no
image is bad.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import bad_image_error, check_bad_images
from cnnjax.data.loader import config_value

LOGGED = 5  # skipped files named in the log; the rest are counted


def bad_images_choice(data_config: Any) -> str:
    """``data.bad_images`` (default ``error``), checked."""
    return check_bad_images(config_value(data_config, "bad_images", "error"))


def drop_undecodable(ds, data_config: Any):
    """``ds`` without the examples whose decoding failed when ``data.bad_images='skip'``."""
    return ds.ignore_errors() if bad_images_choice(data_config) == "skip" else ds


def checked(
    batches: Iterator[dict],
    source,
    split: str,
    data_config: Any,
    file_at: Callable[[int], str | None],
    batch_size: int,
    total: int | None = None,
    skipped: list[str] | None = None,
) -> Iterator[dict]:
    """The batches without their ``position`` key; undecodable images handled as ``data.bad_images`` says.

    Args:
      batches: numpy batches whose ``position`` holds each example's position in
        the source's read order (consecutive but for dropped examples).
      source: The stream's source (for ``name``, ``root``, ``read_bytes``, ``channels``).
      split: The split streamed, for messages.
      data_config: ``config.data``.
      file_at: Position -> file name (relative to the folder or archive), or None.
      batch_size: Examples per batch before dropping (the failing batch's span).
      total: Examples a finite pass reads (None: an endless stream).
      skipped: With ``skip``, names of the dropped files are appended here, once each.

    Raises:
      DataError: With ``error``, an undecodable image (named when the source has names).
    """
    import tensorflow as tf

    skip = bad_images_choice(data_config) == "skip"
    expected = 0  # the position of the next example read
    unnamed: list[int] = []  # the first dropped records without a name (TFDS), logged
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            if skip and total is not None and expected < total:  # dropped after the last delivered example
                _record(np.arange(expected, total), source, split, file_at, skipped, unnamed)
            return
        except tf.errors.InvalidArgumentError as err:
            raise _decode_error(err, source, split, file_at, range(expected, expected + batch_size)) from None
        positions = batch.pop("position")
        if skip and len(positions) and (positions[0] != expected or positions[-1] != expected + len(positions) - 1):
            dropped = np.setdiff1d(np.arange(expected, positions[-1] + 1), positions)
            _record(dropped, source, split, file_at, skipped, unnamed)
        if len(positions):
            expected = int(positions[-1]) + 1
        yield batch


def _record(positions: np.ndarray, source, split: str, file_at, skipped: list[str] | None,
            unnamed: list[int]) -> None:
    for position in positions.tolist():
        name = file_at(position)
        if name is None:  # a TFDS record: logged (the first few of a stream), but it has no name to record
            if len(unnamed) < LOGGED:
                unnamed.append(position)
                logging.warning("data.bad_images=skip: left out an undecodable image of the %r split of %r "
                                "(stream position %d).", split, source.name, position)
            continue
        if skipped is None or name in skipped:
            continue
        skipped.append(name)
        if len(skipped) <= LOGGED:
            logging.warning("data.bad_images=skip: left out undecodable image %r of %r (%d so far).",
                            name, str(source.root), len(skipped))
        elif len(skipped) == LOGGED + 1:
            logging.warning("data.bad_images=skip: more undecodable images left out; summary.json counts them "
                            "(data/skipped_images).")


def _decode_error(err, source, split: str, file_at, positions: range) -> DataError:
    """The DataError for a failed batch: the first of its files that does not decode, by name."""
    import tensorflow as tf

    for position in positions:
        name = file_at(position)
        if name is None:
            break
        try:
            tf.io.decode_image(source.read_bytes(name), channels=source.channels, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return bad_image_error(name, str(source.root))
    where = getattr(source, "root", source.name)
    reason = re.sub(r"\{\{.*?\}\}\s*", "", err.message.splitlines()[0])  # TF's op-name prefix
    return DataError(
        f"Cannot decode an image of the {split!r} split of {str(where)!r} ({reason}). "
        "Remove or replace it, or pass --config.data.bad_images=skip to leave such images out of the stream."
    )
