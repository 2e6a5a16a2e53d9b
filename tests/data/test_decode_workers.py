"""Decoding on every core: helper processes give the same arrays, in order, as decoding in the caller."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import decode_workers
from cnnjax.data.decode import decode_image
from cnnjax.data.errors import DataError


def _images(n: int) -> tuple[list[str], list[bytes]]:
    rng = np.random.default_rng(0)
    names, blobs = [], []
    for i in range(n):
        buffer = io.BytesIO()
        mode = "L" if i % 7 == 3 else "RGB"
        pixels = rng.integers(0, 256, (12, 12, 3) if mode == "RGB" else (12, 12), dtype=np.uint8)
        Image.fromarray(pixels, mode).save(buffer, format="PNG" if i % 5 == 1 else "JPEG")
        names.append(f"c/{i}.img")
        blobs.append(b"not an image" if i % 11 == 10 else buffer.getvalue())
    return names, blobs


def _equal(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_helpers_decode_what_the_caller_would_in_order():
    names, blobs = _images(300)
    want = [decode_image(b, name) for b, name in zip(blobs, names)]
    assert sum(x is None for x in want) == 27  # undecodable ones come back as None, in place
    reads, readers = [], set()

    def read(start, stop):  # slow enough that the helpers (0.3-1 s to start) get chunks too
        reads.append((start, stop))
        readers.add(threading.current_thread() is threading.main_thread())
        time.sleep(0.1)
        return blobs[start:stop]

    chunks = list(decode_workers.decoded_chunks(names, read, chunk_size=16, helpers=2))
    assert [len(c) for c in chunks] == [16] * 18 + [12]
    _equal([x for c in chunks for x in c], want)
    assert sorted(reads) == [(s, min(s + 16, 300)) for s in range(0, 300, 16)]  # each piece read once
    assert readers == {True, False}  # the caller and the helpers both decoded
    _equal(decode_workers.decode_images(names, blobs, helpers=0), want)


def test_a_helper_that_dies_hands_its_chunk_back(monkeypatch):
    names, blobs = _images(120)
    want = [decode_image(b, name) for b, name in zip(blobs, names)]
    monkeypatch.setattr(decode_workers._Helper, "decode", lambda self, blobs, names: None)
    _equal(decode_workers.decode_images(names, blobs, helpers=1), want)


def test_read_errors_reach_the_caller():
    names, blobs = _images(64)

    def read(start, stop):
        if start >= 32:
            raise DataError("Cannot read image file 'c/40.img'")
        return blobs[start:stop]

    with pytest.raises(DataError, match="c/40.img"):
        list(decode_workers.decoded_chunks(names, read, chunk_size=8, helpers=1))


def test_helper_count_needs_enough_images_and_an_idle_core(monkeypatch):
    monkeypatch.setattr(decode_workers.os, "sched_getaffinity", lambda _: {0, 1}, raising=False)
    monkeypatch.setattr(decode_workers.os, "getloadavg", lambda: (0.9, 0.0, 0.0), raising=False)
    assert decode_workers.helper_count(decode_workers.MIN_IMAGES_FOR_HELPERS - 1) == 0
    assert decode_workers.helper_count(50_000) == 1
    monkeypatch.setattr(decode_workers.os, "getloadavg", lambda: (1.7, 0.0, 0.0), raising=False)
    assert decode_workers.helper_count(50_000) == 1  # a third of a core idle on average
    monkeypatch.setattr(decode_workers.os, "getloadavg", lambda: (1.8, 0.0, 0.0), raising=False)
    assert decode_workers.helper_count(50_000) == 0  # other work holds the other core
    monkeypatch.setattr(decode_workers.os, "sched_getaffinity", lambda _: set(range(16)), raising=False)
    assert decode_workers.helper_count(50_000) == decode_workers.MAX_HELPERS
    monkeypatch.setattr(decode_workers.os, "sched_getaffinity", lambda _: {0}, raising=False)
    monkeypatch.setattr(decode_workers.os, "getloadavg", lambda: (0.0, 0.0, 0.0), raising=False)
    assert decode_workers.helper_count(50_000) == 0


def test_a_helper_that_cannot_start_leaves_the_work_to_the_caller(monkeypatch):
    names, blobs = _images(40)
    want = [decode_image(b, name) for b, name in zip(blobs, names)]

    def no_process(*args, **kwargs):
        raise OSError("no interpreter")

    monkeypatch.setattr(decode_workers.subprocess, "Popen", no_process)
    _equal(decode_workers.decode_images(names, blobs, helpers=2), want)
