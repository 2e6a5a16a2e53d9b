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
    monkeypatch.setattr(decode_workers._Helper, "decode", lambda self, blobs, names, root: None)
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


def _write(tmp_path, names, blobs) -> str:
    for name, blob in zip(names, blobs):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(blob)
    return str(tmp_path)


def test_helpers_that_read_the_files_themselves_decode_the_same(tmp_path):
    names, blobs = _images(200)
    root = _write(tmp_path, names, blobs)
    want = [decode_image(b, name) for b, name in zip(blobs, names)]
    caller_reads = []

    def read(start, stop):
        caller_reads.append((start, stop))
        return blobs[start:stop]

    decoder = decode_workers.ChunkDecoder(names, read, chunk_size=16, helpers=1, root=root)
    deadline = time.time() + 60
    while decoder._taken < 13 and time.time() < deadline:  # the helper works before anyone iterates
        time.sleep(0.05)
    assert decoder._taken == 13 and not caller_reads
    _equal([x for chunk in decoder for x in chunk], want)


def test_a_file_the_helper_cannot_read_goes_to_the_caller(tmp_path):
    names, blobs = _images(64)
    root = _write(tmp_path, names, blobs)
    (tmp_path / names[40]).unlink()

    def read(start, stop):  # the caller's own reader reports the missing file
        if start <= 40 < stop:
            raise DataError(f"Cannot read image file {names[40]!r}")
        return blobs[start:stop]

    with pytest.raises(DataError, match="c/40.img"):
        list(decode_workers.ChunkDecoder(names, read, chunk_size=8, helpers=1, root=root))


def test_helpers_pause_while_decoded_chunks_wait(monkeypatch):
    names, blobs = _images(160)
    want = [decode_image(b, name) for b, name in zip(blobs, names)]
    taken = []
    original_take = decode_workers.ChunkDecoder._take
    monkeypatch.setattr(decode_workers.ChunkDecoder, "_take",
                        lambda self: taken.append(original_take(self)) or taken[-1])
    decoder = decode_workers.ChunkDecoder(names, lambda a, b: blobs[a:b], chunk_size=16, helpers=1,
                                          max_ahead_bytes=1)
    time.sleep(3)  # the helper decodes one chunk, then waits for the caller
    assert taken == [0]
    _equal([x for chunk in decoder for x in chunk], want)
    assert sorted(t for t in taken if t is not None) == list(range(10))


def test_close_stops_the_helpers():
    names, blobs = _images(4000)
    decoder = decode_workers.ChunkDecoder(names, lambda a, b: blobs[a:b], chunk_size=16, helpers=1)
    decoder.close()
    assert not any(thread.is_alive() for thread in decoder._threads)
    assert decoder._taken <= 1  # at most the chunk it had begun
