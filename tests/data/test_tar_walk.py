"""Listing a tar held in memory by walking its headers gives what `tarfile` gives, or defers to it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from cnnjax.data import archive, tar_walk


def _tar(fmt: int, members, pax_headers=None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, pax_headers=pax_headers or {}) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = data.decode() if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
                tar.addfile(info)
    return out.getvalue()


def _reference(buffer: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(buffer)) as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


LONG = "a/" + "deep_folder_name/" * 9 + "image.png"  # > 100 bytes: a ustar prefix, a GNU or a PAX long name
MEMBERS = [
    ("d", tarfile.DIRTYPE, b""),
    ("d/one.jpg", tarfile.REGTYPE, b"x" * 700),
    ("d/empty.png", tarfile.REGTYPE, b""),
    ("d/link.jpg", tarfile.SYMTYPE, b"one.jpg"),
    ("d/hard.jpg", tarfile.LNKTYPE, b"d/one.jpg"),
    (LONG, tarfile.REGTYPE, b"y" * 1024),
    ("d/" + "é" * 60 + ".jpg", tarfile.REGTYPE, b"z" * 3),  # 120 bytes of UTF-8
    ("d/one.jpg", tarfile.REGTYPE, b"later copy"),  # a name twice: the last one counts
]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_same_files_spans_and_names_as_tarfile(fmt):
    members = MEMBERS if fmt != tarfile.USTAR_FORMAT else [m for m in MEMBERS if "é" not in m[0]]
    buffer = _tar(fmt, members)
    got = tar_walk.walk(buffer)
    assert got == _reference(buffer)
    assert LONG in got and buffer[slice(got["d/one.jpg"][0], sum(got["d/one.jpg"]))] == b"later copy"


def test_a_global_header_without_names_or_sizes_is_passed_over():
    buffer = _tar(tarfile.PAX_FORMAT, MEMBERS, pax_headers={"comment": "0123abcd"})  # as `git archive` writes
    assert buffer[156:157] == b"g"
    assert tar_walk.walk(buffer) == _reference(buffer)


def _with_byte(buffer: bytes, at: int, value: int) -> bytes:
    return buffer[:at] + bytes([value]) + buffer[at + 1:]


def test_what_it_cannot_vouch_for_goes_to_tarfile():
    buffer = _tar(tarfile.GNU_FORMAT, MEMBERS[:3])
    second = 512  # the header after the directory's
    assert tar_walk.walk(buffer) is not None
    assert tar_walk.walk(_with_byte(buffer, second + 10, ord("Q"))) is None  # a name byte: checksum wrong
    assert tar_walk.walk(_with_byte(buffer, second + 156, ord("S"))) is None  # a GNU sparse member
    assert tar_walk.walk(buffer[:second + 512 + 100]) is None  # the member's data cut short
    assert tar_walk.walk(b"\0" * 1024) is None  # nothing at all
    assert tar_walk.walk(_tar(tarfile.PAX_FORMAT, MEMBERS[:2], pax_headers={"path": "x"})) is None


def test_image_files_read_the_same_bytes_either_way(tmp_path, monkeypatch):
    members = [(f"train/{c}/{i}.jpg", tarfile.REGTYPE, bytes([i]) * (100 + i)) for c in "ab" for i in range(5)]
    members.append(("./train/a/." + "notes.jpg", tarfile.REGTYPE, b"hidden"))
    path = Path(tmp_path / "set.tar.gz")
    import gzip

    path.write_bytes(gzip.compress(_tar(tarfile.GNU_FORMAT, members)))
    walked = archive.ImageFiles(path)
    assert walked._buffer is not None
    monkeypatch.setattr(archive, "WHOLE_ARCHIVE_BYTES", 0)
    listed = archive.ImageFiles(path)
    assert listed._tar is not None
    assert walked.files == listed.files and len(walked.files) == 10
    assert walked.read(walked.files[::-1]) == listed.read(listed.files[::-1])
    walked.close()
    listed.close()


def test_a_corrupt_archive_is_named_either_way(tmp_path):
    path = Path(tmp_path / "cut.tar.gz")
    import gzip

    path.write_bytes(gzip.compress(_tar(tarfile.GNU_FORMAT, MEMBERS))[:-40])
    with pytest.raises(archive.DataError, match="cut.tar.gz.*truncated or corrupt"):
        archive.ImageFiles(path)
