"""`--mode=predict`: label new images with a trained run.

`PATH` is an image file, a folder (searched recursively for image files) or a
tar archive (`.tar.gz`, `.tgz`, `.tar`). Each image is decoded with PIL,
converted to the run's channels (grayscale or RGB; alpha dropped), resized to
the run's input size (bilinear) when it differs, normalised with the run's
training statistics and classified in batches of `eval_batch_size` (decoding
overlaps the forward passes; the CSV is written once all are done). The CSV has
`path,label,probability` then `topK_label,topK_probability` for K = 2 .. 5 (as
many as there are classes). An image that cannot be decoded is reported on
stderr with its path and skipped.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

import ml_collections
import numpy as np

from cnnjax.inference.restore import InferenceError, RestoredRun, restore_run
from cnnjax.training import files
from cnnjax.training.files import atomic_write

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
MAX_TOP = 5


def _is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def image_sources(path: str) -> tuple[list[str], Any]:
    """The image names under `path` (sorted) and a reader `read(name) -> bytes`.

    Raises:
      InferenceError: `path` does not exist or holds no image file.
    """
    if not os.path.exists(path):
        raise InferenceError(f"--images={path} does not exist.")
    if os.path.isdir(path):
        names = sorted(
            os.path.join(dirpath, f) for dirpath, _, files in os.walk(path) for f in files
            if _is_image_name(f) and "__MACOSX" not in dirpath
        )

        def read(name: str) -> bytes:
            with open(name, "rb") as f:
                return f.read()
    elif tarfile.is_tarfile(path):
        archive = tarfile.open(path, "r:*")
        members = {m.name: m for m in archive.getmembers() if m.isfile() and _is_image_name(m.name)}
        # Archive order: a compressed tarball streams forwards only.
        names = sorted(members, key=lambda n: members[n].offset_data)

        def read(name: str) -> bytes:
            extracted = archive.extractfile(members[name])
            return extracted.read() if extracted else b""
    else:
        names = [path]  # one file, whatever its extension

        def read(name: str) -> bytes:
            with open(name, "rb") as f:
                return f.read()
    if not names:
        raise InferenceError(f"--images={path} holds no image file (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}).")
    return names, read


def decode_image(data: bytes, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Bytes to uint8 (H, W, C) in the run's shape (see the module docstring)."""
    from PIL import Image

    height, width, channels = image_shape
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        array = np.asarray(image, np.uint8)
    return array.reshape(height, width, channels)


def _batches(names, read, image_shape, batch_size, skipped) -> Iterator[tuple[list[str], np.ndarray]]:
    """Decoded batches; undecodable images go to `skipped` as (name, reason)."""
    done: list[str] = []
    arrays: list[np.ndarray] = []
    for name in names:
        try:
            arrays.append(decode_image(read(name), image_shape))
            done.append(name)
        except Exception as err:  # noqa: BLE001 (any decoder failure means: skip this file)
            skipped.append((name, f"{type(err).__name__}: {err}"))
            print(f"warning: skipped unreadable image {name}: {type(err).__name__}: {err}", file=sys.stderr)
        if len(arrays) == batch_size:
            yield done, np.stack(arrays)
            done, arrays = [], []
    if arrays:
        yield done, np.stack(arrays)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def csv_header(num_classes: int) -> list[str]:
    header = ["path", "label", "probability"]
    for k in range(2, min(MAX_TOP, num_classes) + 1):
        header += [f"top{k}_label", f"top{k}_probability"]
    return header


def predict_files(run: RestoredRun, names: list[str], read, out_path: str, batch_size: int) -> dict[str, Any]:
    """Classifies `names` and writes the CSV to `out_path` (atomically: temp file + rename, or one object).

    Images are decoded a chunk at a time while the forward passes of the chunk
    before run (see `RestoredRun.logits_of_chunks`); the CSV is written at the end.
    """
    top = min(MAX_TOP, len(run.class_names))
    skipped: list[tuple[str, str]] = []
    done: list[str] = []
    run.prepare(batch_size, len(names))  # compiles while the first images are decoded

    def chunks():
        for chunk_names, images in _batches(names, read, run.image_shape, run.chunk_size(batch_size, len(names)),
                                            skipped):
            done.extend(chunk_names)
            yield images

    logits = run.logits_of_chunks(chunks(), batch_size, len(names))
    if not done:
        raise InferenceError(f"None of the {len(names)} image files could be read; nothing written.")
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    with atomic_write(out_path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header(len(run.class_names)))
        for name, p, idx in zip(done, probs, order):
            row = [name]
            for i in idx:
                row += [run.class_names[i], f"{p[i]:.6f}"]
            writer.writerow(row)
    return {"predicted": len(done), "skipped": len(skipped), "skipped_files": skipped}


def predict_run(workdir: str, config: ml_collections.ConfigDict, images: str, out_path: str,
                step: int | None = None) -> dict[str, Any]:
    """Labels the images at `images` with `workdir`'s checkpoint; writes the CSV `out_path`."""
    run = restore_run(workdir, config, step)
    names, read = image_sources(images)
    parent = os.path.dirname(files.absolute(out_path))
    if not files.is_remote(out_path) and not os.path.isdir(parent):
        raise InferenceError(f"--predictions={out_path}: the directory {parent} does not exist.")
    return predict_files(run, names, read, out_path, config.eval_batch_size)
