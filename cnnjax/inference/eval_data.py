"""The images `--mode=eval` scores, as chunks in the run's input shape.

An image folder is listed (and its class names checked) at once, but its
images are decoded a chunk at a time, so that decoding one chunk overlaps the
forward passes of the one before (JAX runs them asynchronously); the chunks are
decoded on every core (`cnnjax.data.decode_workers`). Each image
gets the numbers it would get from a whole-split load: gray or colour as
decoded, then converted to the run's channels and size. An undecodable image,
or one whose size differs from the first image's, is reported when its chunk is
decoded; with `data.bad_images=skip` an undecodable image is left out.
A TFDS split is loaded whole and only sliced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import ml_collections
import numpy as np

from cnnjax.data import one_split
from cnnjax.data.archive import is_tarball
from cnnjax.data.decode_workers import decoded_chunks
from cnnjax.data.errors import DataError
from cnnjax.data.image_folder import IMAGE_FOLDER, bad_image_error, check_bad_images, stack_images
from cnnjax.inference import prefetch
from cnnjax.inference.restore import InferenceError, RestoredRun, convert_images

Chunks = Iterator[tuple[np.ndarray, np.ndarray]]


def data_source(data: ml_collections.ConfigDict) -> str:
    """How messages name the evaluated data."""
    return f"data.name={data.name}" + (f" (data.path={data.path})" if data.get("path") else "")


@dataclasses.dataclass
class EvalImages:
    """One split to score.

    Attributes:
      num_examples: images listed (those left out as undecodable are in `skipped`).
      chunks: `chunks(size)` yields `(uint8 images in the run's shape, labels)`
        with at most `size` images each, in order.
      skipped: names of the images left out so far (`data.bad_images=skip`).
    """

    num_examples: int
    chunks: Callable[[int], Chunks]
    skipped: list[str] = dataclasses.field(default_factory=list)


def _labels(run: RestoredRun, names, data: ml_collections.ConfigDict) -> np.ndarray:
    """Labels in the run's class order; unknown class names are an error naming them."""
    index = {name: i for i, name in enumerate(run.class_names)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise InferenceError(
            f"{data_source(data)} has classes the run was not trained on: {', '.join(unknown)}. "
            f"The run's classes are: {', '.join(run.class_names)}.")
    return np.array([index[n] for n in names], np.int32)


def _array_images(run: RestoredRun, data: ml_collections.ConfigDict) -> EvalImages:
    try:
        images, names = one_split.load_one_split(data, "test")
    except (FileNotFoundError, ValueError) as err:
        raise InferenceError(f"Cannot load the evaluation data ({data_source(data)}): {err}") from None
    labels = _labels(run, names, data)
    images = convert_images(images, run.image_shape, data_source(data))

    def chunks(size: int) -> Chunks:
        for start in range(0, len(labels), size):
            yield images[start:start + size], labels[start:start + size]

    return EvalImages(num_examples=len(labels), chunks=chunks)


def _folder_images(run: RestoredRun, data: ml_collections.ConfigDict) -> EvalImages:
    source = data_source(data)
    try:
        check_bad_images(data.get("bad_images", "error"))
        reader, files, classes, _ = one_split.folder_split_files(data, "test")
    except (FileNotFoundError, ValueError) as err:
        raise InferenceError(f"Cannot load the evaluation data ({source}): {err}") from None
    blobs = None
    try:
        labels = _labels(run, classes, data)
        if not files:
            raise InferenceError(f"Cannot load the evaluation data ({source}): no images in its 'test' split.")
        if is_tarball(Path(str(data.path)).expanduser()):
            # A compressed archive only reads forwards cheaply: one pass for all the (compressed) bytes.
            blobs = reader.read(files)
    except BaseException:
        reader.close()
        raise
    if blobs is not None:
        reader.close()
    result = EvalImages(num_examples=len(files), chunks=lambda size: iter(()))

    def read(start: int, stop: int) -> list[bytes]:
        return blobs[start:stop] if blobs is not None else reader.read(files[start:stop])

    def chunks(size: int) -> Chunks:
        first = None  # (height, width) and name of the first image: all must have its size
        decoded: list[np.ndarray | None] = []
        start = 0
        # Smaller pieces, on every core, in order; begun while the command started where it could (`prefetch`).
        pieces = (prefetch.claim(data.path, files) if blobs is None else None) or decoded_chunks(files, read)
        try:
            for piece in pieces:
                decoded.extend(piece)
                while len(decoded) >= size or (decoded and start + len(decoded) == len(files)):
                    names, part = files[start:start + size], decoded[:size]
                    labels_part = labels[start:start + size]
                    decoded, start = decoded[size:], start + len(part)
                    keep = [i for i, image in enumerate(part) if image is not None]
                    if len(keep) < len(part):
                        bad = [names[i] for i, image in enumerate(part) if image is None]
                        if data.get("bad_images", "error") == "error":
                            raise bad_image_error(bad[0], str(data.path))
                        result.skipped.extend(bad)
                    if not keep:
                        continue
                    kept = [part[i] for i in keep]
                    first = first or (kept[0].shape[:2], names[keep[0]])
                    shape = (*first[0], max(x.shape[2] for x in kept))
                    images = stack_images(kept, [names[i] for i in keep], shape, first[1])
                    yield convert_images(images, run.image_shape, source), labels_part[keep]
        except DataError as err:
            raise InferenceError(f"Cannot load the evaluation data ({source}): {err}") from None
        finally:
            reader.close()

    result.chunks = chunks
    return result


def open_eval_images(run: RestoredRun, data: ml_collections.ConfigDict) -> EvalImages:
    """The test split of `data`, checked as far as can be without decoding (classes, paths).

    Raises:
      InferenceError: data that cannot be loaded, unknown class names, images
        that cannot be converted to the run's input.
    """
    if data.name == IMAGE_FOLDER:
        return _folder_images(run, data)
    return _array_images(run, data)
