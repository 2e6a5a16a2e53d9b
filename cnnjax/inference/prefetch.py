"""`--mode=eval` on an image folder: its images decoded while the command starts.

The eval command spends about a second on one core importing its libraries and
parsing its flags (the config schema imports JAX, Flax, Optax and Orbax), while
decoding a 10,000-image folder takes about as long on one core. `start` runs
first, from the raw command line: it reads the run's `config.json`, applies
the `--config.data.KEY=VALUE` arguments to its `data` block, chooses the test
split's files exactly as the command later will (`folder_split_files`), and
starts helper processes decoding them on the idle cores (`ChunkDecoder`).

That is a guess, checked before use: `claim` hands the decoder over only when
the command's own listing, made after every flag and check, is the same files
under the same folder; anything else (another folder, a tarball, a mistyped
flag, a workdir without config.json) stops the helpers and the command decodes
as it otherwise would. Nothing is written, and any problem found while guessing
is left for the command's own checks to report.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from types import SimpleNamespace

from cnnjax.data.archive import is_tarball
from cnnjax.data.decode_workers import ChunkDecoder, helper_count

_started: dict[str, object] = {}


def _data_guess(workdir: str, overrides: dict[str, str]) -> SimpleNamespace | None:
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            data = dict(json.load(f).get("data") or {})
    except (OSError, ValueError, AttributeError):
        return None
    for key, text in overrides.items():
        try:
            data[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            data[key] = text
    return SimpleNamespace(**data)


def _root(path) -> str:
    return os.path.realpath(Path(str(path)).expanduser())


def start(workdir: str, data_overrides: dict[str, str]) -> None:
    """Starts decoding the folder that `--mode=eval --workdir=WORKDIR` would evaluate, if it can tell which.

    Args:
      workdir: the run's directory.
      data_overrides: `KEY -> VALUE` of each `--config.data.KEY=VALUE` argument, as typed.
    """
    from cnnjax.data import one_split
    from cnnjax.data.image_folder import IMAGE_FOLDER

    data = _data_guess(workdir, data_overrides)
    if data is None or getattr(data, "name", None) != IMAGE_FOLDER or not getattr(data, "path", None):
        return
    try:
        if is_tarball(Path(str(data.path)).expanduser()):
            return  # an archive is read in one pass by the command itself
        reader, files, _, _ = one_split.folder_split_files(data, "test")
    except Exception:  # noqa: BLE001 (the command's own checks report it)
        return
    if not helper_count(len(files)):
        return
    root = _root(data.path)  # a folder: its reader holds nothing open
    decoder = ChunkDecoder(files, lambda begin, end: reader.read(files[begin:end]), root=root)
    _started.update(root=root, files=files, decoder=decoder)


def claim(path, files: list[str]) -> ChunkDecoder | None:
    """The decoder `start` began, if it decodes exactly `files` of the folder `path`; else None (and it stops)."""
    if not _started:
        return None
    started = dict(_started)
    _started.clear()
    if started["root"] == _root(path) and started["files"] == list(files):
        return started["decoder"]
    started["decoder"].close()
    return None
