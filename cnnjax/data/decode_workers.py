"""Decoding many images on every core: the calling thread plus helper processes.

Two decoding threads ran no faster than one (the work holds the GIL for
much of each image's ~44 us, PIL's own call included). Helper processes do
run in parallel: each is a fresh interpreter (`python -c ...`, never a fork of a
process that has started JAX's threads) that imports only the decoder and
answers pickled lists of image bytes with pickled lists of arrays. The caller
decodes too, from the first chunk on, so a helper that is slow to start (0.15
to 0.4 s) or fails only costs the chunks it would have taken; a helper that dies
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


def serve() -> None:
    """A helper's loop: (bytes, names) lists in on stdin, decoded lists out on stdout, until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while (job := _receive(stdin)) is not None:
        blobs, names = job
        _send(stdout, _decode_all(blobs, names))


class _Helper:
    def __init__(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from cnnjax.data.decode_workers import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)

    def decode(self, blobs: list[bytes], names: Sequence[str]) -> Decoded | None:
        try:
            _send(self.process.stdin, (blobs, list(names)))
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


def decoded_chunks(names: Sequence[str], read: Callable[[int, int], list[bytes]], chunk_size: int = 256,
                   helpers: int | None = None) -> Iterator[Decoded]:
    """Decodes `names` chunk by chunk, in order; `read(start, stop)` gives the bytes of names[start:stop].

    Chunks are taken in order by whoever is free: the caller (while it waits for
    the next chunk to yield) and `helpers` processes (default `helper_count`),
    each through its own thread. `read` is called under a lock, from any of
    those threads. Each chunk is a list of arrays, None where
    `cnnjax.data.decode.decode_image` could not decode the image.
    """
    bounds = [(start, min(start + chunk_size, len(names))) for start in range(0, len(names), chunk_size)]
    helpers = helper_count(len(names)) if helpers is None else helpers
    if not helpers:
        for start, stop in bounds:
            yield _decode_all(read(start, stop), names[start:stop])
        return
    results: dict[int, Decoded] = {}
    errors: list[BaseException] = []
    taken = [0]  # next chunk index not yet taken by anyone
    returned: list[int] = []  # chunks a failed helper gave back
    lock, done = threading.Lock(), threading.Condition()
    stop_event = threading.Event()

    def take() -> int | None:
        with lock:
            if returned:
                return returned.pop()
            if taken[0] >= len(bounds) or stop_event.is_set():
                return None
            taken[0] += 1
            return taken[0] - 1

    def read_chunk(index: int) -> list[bytes]:
        with lock:
            return read(*bounds[index])

    def finish(index: int, decoded: Decoded) -> None:
        with done:
            results[index] = decoded
            done.notify_all()

    def helper_loop() -> None:
        try:
            helper = _Helper()
        except OSError:  # no helper: the caller decodes everything
            return
        try:
            while (index := take()) is not None:
                start, stop = bounds[index]
                decoded = helper.decode(read_chunk(index), names[start:stop])
                if decoded is None:  # the helper died: the caller decodes this chunk
                    with lock:
                        returned.append(index)
                    with done:
                        done.notify_all()
                    return
                finish(index, decoded)
        except BaseException as error:  # noqa: BLE001 (a read error belongs to the caller)
            errors.append(error)
            with done:
                done.notify_all()
        finally:
            helper.close()

    threads = [threading.Thread(target=helper_loop, daemon=True) for _ in range(helpers)]
    for thread in threads:
        thread.start()
    try:
        for index in range(len(bounds)):
            while True:
                with done:
                    if errors:
                        raise errors[0]
                    if index in results:
                        break
                mine = take()
                if mine is None:  # every chunk is taken: wait for the one to yield
                    with done:
                        done.wait_for(lambda i=index: i in results or errors or returned, timeout=1.0)
                    continue
                start, stop = bounds[mine]
                finish(mine, _decode_all(read_chunk(mine), names[start:stop]))
            with done:
                chunk = results.pop(index)
            yield chunk
    finally:
        stop_event.set()
        for thread in threads:
            thread.join()


def decode_images(names: Sequence[str], blobs: Sequence[bytes], helpers: int | None = None) -> Decoded:
    """Every image of `blobs` decoded (None where it cannot be), on every core (see `decoded_chunks`)."""
    decoded: Decoded = []
    for chunk in decoded_chunks(names, lambda start, stop: list(blobs[start:stop]), helpers=helpers):
        decoded.extend(chunk)
    return decoded
