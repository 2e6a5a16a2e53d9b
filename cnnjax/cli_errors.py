"""Command-line input the config schema cannot see: flags, config overrides, the workdir, the disk.

Each problem becomes one `error: ...` line and exit status 2 (see `cnnjax.main`), never a traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
import urllib.parse

from absl import flags

FLAGS = flags.FLAGS


class WorkdirError(Exception):
    """`--workdir` cannot hold a run: it is a file, the disk is full or read-only, or the bucket is unusable."""


class FlagError(Exception):
    """A command-line flag outside the config (devices, coordinator) has an impossible value."""


# Errors of the disk under the workdir: the user's to fix (free space, permissions), not a bug.
_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR)


def _disk_fault(err: BaseException) -> tuple[int, str | None] | None:
    """(errno, file) of a disk fault behind `err`, or None.

    An OSError says so itself; a checkpoint write that fails inside orbax's
    tensorstore arrives as another type whose message carries the code
    (`[os_error_code='28']`) and the file (`Failed writing: "PATH"`).
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            return err.errno, err.filename
        code = re.search(r"os_error_code='(\d+)'", str(err))
        if code and int(code.group(1)) in _DISK_ERRNOS:
            path = re.search(r'Failed writing: "([^"]+)"', str(err))
            return int(code.group(1)), path.group(1) if path else None
        err = err.__cause__ or err.__context__
    return None


def disk_error(err: BaseException, workdir: str) -> WorkdirError | None:
    """The message for a disk fault while writing, or None for other errors."""
    fault = _disk_fault(err)
    if fault is None:
        return None
    where = fault[1] or workdir
    return WorkdirError(
        f"cannot write {where!r}: {os.strerror(fault[0])}. Outputs already written are kept, and so is the last "
        f"complete checkpoint in {workdir}/checkpoints; free space (or fix permissions) and run the "
        "same command again to resume."
    )


def write_fault(err: BaseException, workdir: str) -> WorkdirError | None:
    """The message for a run stopped because its workdir stopped taking writes, or None for other errors.

    A local workdir: a disk errno (:func:`disk_error`). A bucket: its failures come
    as many types (gcsfs's OSError, google-cloud-storage's and tensorstore's own
    errors, then the failures of the writers closed after the first), so the
    bucket is asked instead: when a probe object cannot be written there either,
    the failure was the bucket's, and the first error of the chain says what failed.
    """
    from cnnjax.training import files

    if not files.is_remote(workdir):
        return disk_error(err, workdir)
    if not isinstance(err, Exception):
        return None
    try:
        files.check_remote(workdir)
    except files.StorageError:
        first = err
        while first.__context__ is not None:  # what closing the writers raised follows the first failure
            first = first.__context__
        return WorkdirError(
            f"cannot write to {workdir!r} any more ({_storage_failure(first)}), and the bucket refuses a test "
            "write too: check its permissions, quota and this machine's credentials. Outputs already written "
            f"are kept, and so is the last complete checkpoint in {workdir}/checkpoints; once the bucket takes "
            "writes again, run the same command again to resume."
        )
    return None


def _storage_failure(err: BaseException) -> str:
    """`err` in a few words: its first line, with a request URL shortened to the object it names."""
    line = (str(err).splitlines() or [type(err).__name__])[0]
    found = re.search(r"/b/([^/?\s]+)/o(?:/([^?\s]+)|\?\S*?\bname=([^&\s]+))", line)
    if found is None:
        return line[:200]
    obj = urllib.parse.unquote(found.group(2) or found.group(3))
    status = line[:found.start()].split("http")[0].strip(" :") or type(err).__name__
    return f"{status[:80]} writing gs://{found.group(1)}/{obj}"


def check_workdir_flag(workdir: str) -> None:
    """A workdir that cannot hold a run is refused before any data is loaded or anything compiled."""
    from cnnjax.training import files

    if files.is_remote(workdir):
        try:
            files.check_remote(workdir)
        except files.StorageError as err:
            raise WorkdirError(str(err)) from None
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir!r} is a file; name a directory (it is created if missing).")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):  # also catches a read-only filesystem (EROFS), even as root
        raise WorkdirError(
            f"--workdir={workdir!r} cannot be written: {existing!r} is on a read-only filesystem or not "
            "writable by this user; name a writable directory."
        )


def _nearest_config_key(config, bad: str) -> str:
    """'did you mean' for an unknown `--config.KEY`: the closest existing dotted key."""
    keys: list[str] = []

    def walk(node, prefix):
        for key, value in node.items():
            keys.append(prefix + key)
            if hasattr(value, "items"):
                walk(value, f"{prefix}{key}.")

    walk(config, "")
    close = difflib.get_close_matches(bad, keys, n=1, cutoff=0.6)
    return f"; did you mean --config.{close[0]}?" if close else "; see the keys in cnnjax/config.py"


def _load_config_file(argv: list[str]):
    """The config that `--config=PATH[:ARG]` names (absl may fail before it stores it), or None."""
    import importlib.util

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_cnnjax_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # the message then falls back to absl's own
        return None


def _unknown_override(argv: list[str]) -> str | None:
    """The first `--config.KEY=...` whose KEY the loaded config does not have."""
    config = FLAGS["config"].value or _load_config_file(argv)
    if config is None:
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                return f"unknown config key {key!r}{_nearest_config_key(config, key)}"
            node = node[part]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with bad flags reported in one line and exit status 2."""
    try:
        remaining = FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as err:
        message = _unknown_override(argv[1:]) if not isinstance(err, flags.IllegalFlagValueError) else None
        text = str(err).strip().strip("'\"").replace("\\n", " ")
        if "Traceback" in text:  # a config file's own error: its first line and the exception, not the stack
            lines = [line for line in text.splitlines() if line.strip()]
            text = f"{lines[0]} {lines[-1]}"
        print(f"error: {message or text}", file=sys.stderr)
        sys.exit(2)
    try:  # the config file loads lazily: a missing file or a failing get_config shows on first use
        FLAGS.config.keys()
    except Exception as err:  # noqa: BLE001 (any failure of the user's config file)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"error: --config={FLAGS['config'].config_filename}: {' '.join(lines[-2:])}", file=sys.stderr)
        sys.exit(2)
    return remaining
