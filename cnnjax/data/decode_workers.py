"""Decoding many images on every core: the calling thread plus helper processes.

Two decoding threads ran no faster than one (the work holds the GIL for
much of each image's ~44 us, PIL's own call included). Helper processes do
run in parallel: each is a fresh interpreter (`python -c ...`, never a fork of a
process that has started JAX's threads) that imports only the decoder and
answers pickled lists of image bytes (or of file paths, which it reads itself)
with pickled lists of arrays. The caller decodes too, from the first chunk it
asks for, so a helper that is slow to start (0.15 to 0.4 s) or fails only costs
the chunks it would have taken; a helper that dies, or cannot read a file,
hands its chunk back to the caller.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from cnnjax.data.decode import decode_image

# Below this many images a helper (0.15-0.4 s of start-up on another core) does not pay.
MIN_IMAGES_FOR_HELPERS = 2048
MAX_HELPERS = 7
# Helpers stop taking chunks while this many bytes of decoded images wait for the caller.
MAX_AHEAD_BYTES = 512 << 20
_HEADER = struct.Struct("<Q")

Decoded = list["np.ndarray | None"]


def helper_count(num_images: int) -> int:
    """Helper processes for `num_images` images: one per idle core beyond the caller's, none for few images.

    Idle is the core count less the one-minute load average (a quarter of a
    core idle on average counts): on cores that other work keeps busy, a
    helper only adds its start-up and the pickling.
    """
    if num_images < MIN_IMAGES_FOR_HELPERS:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    idle = cores - os.getloadavg()[0] if hasattr(os, "getloadavg") else cores
    return max(0, min(MAX_HELPERS, cores - 1, int(idle + 0.75)))


def _send(stream, payload) -> None:
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _decode_all(blobs: Sequence[bytes], names: Sequence[str]) -> Decoded:
    return [decode_image(b, name) for b, name in zip(blobs, names)]


def _read_files(root: str, names: Sequence[str]) -> list[bytes] | None:
    """The bytes of root/name for each name; None if any cannot be read (the caller reads and reports it)."""
    blobs = []
    try:
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                blobs.append(f.read())
    except OSError:
        return None
    return blobs


def serve() -> None:
    """A helper's loop until stdin closes: (bytes, names, None) or (None, names, root) in; decoded lists out.

    A list of paths that cannot all be read is answered with False.
    """
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (job := _receive(stdin)) is not None:
        blobs, names, root = job
        if blobs is None:
            blobs = _read_files(root, names)
        _send(stdout, False if blobs is None else _decode_all(blobs, names))


class _Helper:
    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from cnnjax.data.decode_workers import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def decode(self, blobs: list[bytes] | None, names: Sequence[str], root: str | None) -> Decoded | bool | None:
        """The decoded chunk; False where the helper could not read a file; None where it died."""
        try:
            _send(self.process.stdin, (blobs, list(names), root))
            return _receive(self.process.stdout)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            return None

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        finally:
            self.process.stdout.close()


class ChunkDecoder:
    """`names` decoded chunk by chunk, in order, by the caller and helper processes.

    The helpers start at once and take chunks in order, each through its own
    thread, while the caller does other work; iterating yields the chunks in
    order, the caller decoding whichever chunk no one has taken yet while it
    waits. `read(start, stop)` gives the bytes of names[start:stop] (called
    under a lock, from any of those threads); with `root`, the helpers read
    root/name themselves and `read` is left to the caller. Helpers pause while
    `max_ahead_bytes` of decoded images wait to be yielded. Each chunk is a
    list of arrays, None where `cnnjax.data.decode.decode_image` could not
    decode the image. Iterate once; `close` stops the helpers.
    """

    def __init__(self, names: Sequence[str], read: Callable[[int, int], list[bytes]], chunk_size: int = 256,
                 helpers: int | None = None, root: str | None = None, max_ahead_bytes: int = MAX_AHEAD_BYTES):
        self.names = names
        self._read, self._root, self._max_ahead = read, root, max_ahead_bytes
        self._bounds = [(start, min(start + chunk_size, len(names))) for start in range(0, len(names), chunk_size)]
        self._results: dict[int, Decoded] = {}
        self._ahead = 0  # bytes in _results
        self._errors: list[BaseException] = []
        self._taken = 0  # next chunk index not yet taken by anyone
        self._returned: list[int] = []  # chunks a helper gave back
        self._lock, self._done = threading.Lock(), threading.Condition()
        self._stop = threading.Event()
        count = helper_count(len(names)) if helpers is None else helpers
        self._threads = [threading.Thread(target=self._helper_loop, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _take(self) -> int | None:
        with self._lock:
            if self._returned:
                return self._returned.pop()
            if self._taken >= len(self._bounds) or self._stop.is_set():
                return None
            self._taken += 1
            return self._taken - 1

    def _read_chunk(self, index: int) -> list[bytes]:
        with self._lock:
            return self._read(*self._bounds[index])

    def _finish(self, index: int, decoded: Decoded) -> None:
        with self._done:
            self._results[index] = decoded
            self._ahead += sum(image.nbytes for image in decoded if image is not None)
            self._done.notify_all()

    def _give_back(self, index: int) -> None:
        with self._lock:
            self._returned.append(index)
        with self._done:
            self._done.notify_all()

    def _helper_loop(self) -> None:
        try:
            helper = _Helper()
        except OSError:  # no helper: the caller decodes everything
            return
        try:
            while True:
                with self._done:
                    self._done.wait_for(lambda: self._ahead <= self._max_ahead or self._stop.is_set())
                if (index := self._take()) is None:
                    return
                start, stop = self._bounds[index]
                blobs = None if self._root is not None else self._read_chunk(index)
                decoded = helper.decode(blobs, self.names[start:stop], self._root)
                if not isinstance(decoded, list):  # False: unreadable file; None: the helper died
                    self._give_back(index)
                    if decoded is None:
                        return
                    continue
                self._finish(index, decoded)
        except BaseException as error:  # noqa: BLE001 (a read error belongs to the caller)
            self._errors.append(error)
            with self._done:
                self._done.notify_all()
        finally:
            helper.close()

    def __iter__(self) -> Iterator[Decoded]:
        try:
            for index in range(len(self._bounds)):
                while True:
                    with self._done:
                        if self._errors:
                            raise self._errors[0]
                        if index in self._results:
                            break
                    mine = self._take()
                    if mine is None:  # every chunk is taken: wait for the one to yield
                        with self._done:
                            self._done.wait_for(
                                lambda i=index: i in self._results or self._errors or self._returned, timeout=1.0)
                        continue
                    start, stop = self._bounds[mine]
                    self._finish(mine, _decode_all(self._read_chunk(mine), self.names[start:stop]))
                with self._done:
                    chunk = self._results.pop(index)
                    self._ahead -= sum(image.nbytes for image in chunk if image is not None)
                    self._done.notify_all()
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        """Stops the helpers (each after the chunk it is decoding) and waits for them."""
        self._stop.set()
        with self._done:
            self._done.notify_all()
        for thread in self._threads:
            thread.join()


def decoded_chunks(names: Sequence[str], read: Callable[[int, int], list[bytes]], chunk_size: int = 256,
                   helpers: int | None = None) -> Iterator[Decoded]:
    """Decodes `names` chunk by chunk, in order (a `ChunkDecoder`; without helpers, all in the caller)."""
    helpers = helper_count(len(names)) if helpers is None else helpers
    if not helpers:
        for start in range(0, len(names), chunk_size):
            stop = min(start + chunk_size, len(names))
            yield _decode_all(read(start, stop), names[start:stop])
        return
    yield from ChunkDecoder(names, read, chunk_size, helpers)


def decode_images(names: Sequence[str], blobs: Sequence[bytes], helpers: int | None = None) -> Decoded:
    """Every image of `blobs` decoded (None where it cannot be), on every core (see `decoded_chunks`)."""
    decoded: Decoded = []
    for chunk in decoded_chunks(names, lambda start, stop: list(blobs[start:stop]), helpers=helpers):
        decoded.extend(chunk)
    return decoded
