"""One file layer for workdirs on a local disk or in a bucket (`gs://BUCKET/PATH`).

Local paths go through `os` exactly as before: whole files are written to a
temporary name, fsynced and renamed over the target. A bucket has no rename
and no append, but an object upload is atomic: a reader sees the old or the new
object, never half of one. So a whole file is built in memory and uploaded as
one object, and an append uploads the new lines as a small object that GCS then
composes onto the end of the log (one atomic server-side step). Orbax writes
checkpoints to the same bucket itself (tensorstore's `gcs` driver).

Remote paths use fsspec (`gcsfs`, installed by `pip install cnnjax[gcs]`).
Against a local emulator, setting `STORAGE_EMULATOR_HOST=http://HOST:PORT`
points gcsfs, google-cloud-storage (TensorBoard) and tensorstore (orbax) at it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import tempfile
import urllib.parse
import uuid
from typing import IO, Any, Iterator

REMOTE_SCHEMES = ("gs",)
# GCS bucket names: lower-case letters, digits, '-', '_', '.', a letter or digit at each end; 3-63
# characters, or up to 222 with dots, each dotted part at most 63.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class StorageError(OSError):
    """A remote workdir that cannot be used: a bad URL, a missing bucket, an unreachable endpoint."""


def is_remote(path: str) -> bool:
    """Whether `path` is a URL (`gs://...`) rather than a local path."""
    return "://" in str(path)


def absolute(path: str) -> str:
    """`os.path.abspath` for local paths; a URL as it is."""
    return str(path) if is_remote(path) else os.path.abspath(path)


def split_url(url: str) -> tuple[str, str, str]:
    """(scheme, bucket, path inside the bucket) of `scheme://bucket/path`."""
    parsed = urllib.parse.urlsplit(str(url))
    return parsed.scheme, parsed.netloc, parsed.path.strip("/")


def prepare_remote() -> None:
    """Settings the libraries under orbax and TensorBoard need before their first remote access."""
    # etils.epath (orbax's paths) would use TensorFlow's gfile for gs:// when TensorFlow is
    # installed; fsspec (gcsfs) is what this layer uses, so both see the same bucket the same way.
    if os.environ.get("EPATH_USE_TF") is None:
        os.environ["EPATH_USE_TF"] = "false"
        with contextlib.suppress(Exception):
            from etils.epath import gpath

            gpath._is_tf_installed.cache_clear()  # the answer is cached at the first path of any kind
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        # tensorstore has its own names for an endpoint and for "no real credentials".
        url = emulator if "://" in emulator else f"http://{emulator}"
        os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
        os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")
        # gcsfs would ask Google's control plane (which an emulator lacks) for each bucket's layout.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _fs(path: str):
    """The fsspec filesystem of a URL (cached by fsspec), its listings not cached across calls."""
    prepare_remote()
    import fsspec

    fs, _ = fsspec.core.url_to_fs(path)
    fs.invalidate_cache()  # another process (a killed run, a test) may have changed the bucket
    return fs


def exists(path: str) -> bool:
    return _fs(path).exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _fs(path).isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names of the entries directly under `path`."""
    if not is_remote(path):
        return os.listdir(path)
    fs = _fs(path)
    itself = fs._strip_protocol(path).rstrip("/")  # listings name objects without the gs:// prefix
    return [os.path.basename(p.rstrip("/")) for p in fs.ls(path, detail=False) if p.rstrip("/") != itself]


def makedirs(path: str) -> None:
    """Creates a local directory (and its parents); a bucket needs none."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def rmtree(path: str) -> None:
    """Deletes a directory tree (every object under a prefix); a missing one is no error."""
    if not is_remote(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs = _fs(path)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def rename_tree(source: str, target: str) -> None:
    """Moves a directory; in a bucket this copies every object and deletes the originals."""
    if not is_remote(source):
        os.replace(source, target)
        return
    fs = _fs(source)
    fs.copy(source.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
    fs.rm(source, recursive=True)


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        return _fs(path).cat_file(path)
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _file_mode(path: str) -> int:
    """The permissions a rewrite of `path` gets: its own where it exists, else a new file's (0666 less the umask)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _fsync_directory(directory: str) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Opens a temporary file that replaces `path` when the block ends without error.

    Args:
      path: the file to (re)write, local or remote.
      mode: "w" (text) or "wb" (bytes).
      **open_kwargs: passed to `open` (e.g. `newline=""` for CSV).

    Yields:
      The open temporary file (in memory for a remote path, uploaded as one
      object at the end). On an exception `path` is untouched.
    """
    if is_remote(path):
        buffer = io.BytesIO() if "b" in mode else io.StringIO(newline="")
        yield buffer
        data = buffer.getvalue()
        _fs(path).pipe_file(path, data if isinstance(data, bytes) else data.encode("utf-8"))
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode(path))  # mkstemp's 0600 would make every result private to its writer
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _part_prefix(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.part-")


def append_remote(path: str, data: bytes) -> None:
    """Appends `data` to the object `path`: a new part object, composed onto the end, then deleted.

    A kill before the compose leaves the log as it was (and a stray part, which
    `clean_remote_parts` removes); the compose replaces the object atomically.
    """
    fs = _fs(path)
    if not fs.exists(path):
        fs.pipe_file(path, data)
        return
    part = _part_prefix(path) + uuid.uuid4().hex
    fs.pipe_file(part, data)
    try:
        fs.merge(path, [path, part])
    finally:
        fs.rm(part)


def clean_remote_parts(path: str) -> None:
    """Deletes part objects an `append_remote` killed half-way left beside `path`."""
    fs = _fs(path)
    for stray in fs.glob(_part_prefix(path) + "*"):
        fs.rm(stray)


def _endpoint() -> tuple[str, int]:
    """(host, port) of the GCS endpoint: the emulator's, or Google's."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return "storage.googleapis.com", 443
    parsed = urllib.parse.urlsplit(emulator if "://" in emulator else f"http://{emulator}")
    return parsed.hostname or "localhost", parsed.port or (443 if parsed.scheme == "https" else 80)


def check_remote(url: str, timeout_s: float = 10.0) -> None:
    """Refuses a remote workdir that cannot hold a run, in one message, before anything is written.

    Checks the URL (scheme and bucket name), that gcsfs is installed, that the
    endpoint answers (within `timeout_s`), and that the bucket exists and takes
    a write (a probe object, deleted at once).

    Raises:
      StorageError: what is wrong and what would be valid.
    """
    prepare_remote()
    scheme, bucket, _ = split_url(url)
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"--workdir={url!r}: {scheme}:// is not supported; name a local directory or "
                           "gs://BUCKET/PATH")
    if not bucket:
        raise StorageError(f"--workdir={url!r} names no bucket; write gs://BUCKET/PATH")
    if not _BUCKET.match(bucket) or max(len(part) for part in bucket.split(".")) > 63:
        raise StorageError(f"--workdir={url!r}: {bucket!r} is not a valid bucket name (3-63 characters: "
                           "lower-case letters, digits, '-', '_', '.'; a letter or digit at each end)")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        raise StorageError(f"--workdir={url!r} needs the gcsfs package: pip install 'cnnjax[gcs]'") from None
    host, port = _endpoint()
    where = "STORAGE_EMULATOR_HOST" if os.environ.get("STORAGE_EMULATOR_HOST") else "Google Cloud Storage"
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise StorageError(f"--workdir={url!r}: cannot reach {where} at {host}:{port} ({err.strerror or err}); "
                           "check the network (or the emulator's address) and run again") from None
    inside = split_url(url)[2]
    probe = f"{scheme}://{bucket}/{inside + '/' if inside else ''}.cnnjax-write-probe-{uuid.uuid4().hex}"
    try:
        fs = _fs(url)
        fs.pipe_file(probe, b"")
        fs.rm(probe)
    except FileNotFoundError:
        raise StorageError(f"--workdir={url!r}: the bucket {bucket!r} does not exist at {where}; create it "
                           "(gcloud storage buckets create gs://BUCKET) or name another") from None
    except Exception as err:  # noqa: BLE001 (auth, permission and HTTP errors come in many types)
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise StorageError(f"--workdir={url!r}: cannot write to the bucket {bucket!r} ({reason}); check its "
                           "permissions and this machine's credentials") from None
