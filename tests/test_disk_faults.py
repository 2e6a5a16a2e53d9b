"""A full or read-only disk under the workdir: exit 2 with one message, the last checkpoint kept, resumable.

Real filesystems: a small tmpfs mounted for the test (needs root and a kernel that allows the mount;
skipped with the reason where it does not).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")


def _mount(directory: Path, options: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {result.stderr.strip()}")


@pytest.fixture()
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    _mount(disk, "size=2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _job(workdir: Path, data_dir: Path):
    # A checkpoint every step, none deleted: the 2 MiB disk fills up after a few of them.
    return (f"--config={DEFAULT}:smoke", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=10", "--config.progress_bar=False")


@pytest.mark.slow
def test_full_disk_stops_cleanly_and_resumes_once_there_is_space(run_cli, small_disk, tmp_path):
    workdir = small_disk / "run"
    full = run_cli(*_job(workdir, tmp_path / "tfds"), timeout=600)
    assert full.returncode == 2, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and "No space left on device" in last, last
    assert "run the same command again to resume" in last
    complete = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert complete and complete[-1] < 8, complete
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "lenet5"

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    resumed = run_cli(*_job(workdir, tmp_path / "tfds"), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 8

    uninterrupted = run_cli(*_job(tmp_path / "whole", tmp_path / "tfds"), timeout=600)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    for key in ("eval/accuracy", "eval/loss", "val/accuracy", "val/loss", "train/loss"):
        assert summary[key] == whole[key], key
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == list(range(1, 9)), "every step logged once after the resume"


def test_read_only_workdir_is_refused_up_front(run_cli, tmp_path):
    disk = tmp_path / "ro"
    _mount(disk, "size=1m,ro")
    try:
        result = run_cli(*_job(disk / "run", tmp_path / "tfds"), timeout=600)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"error: --workdir='{disk / 'run'}' cannot be written: '{disk}' is on a read-only filesystem "
                    "or not writable by this user; name a writable directory."), last
    assert not (disk / "run").exists()


def test_a_checkpoint_write_refused_inside_tensorstore_is_a_disk_fault_naming_the_file():
    from cnnjax.cli_errors import disk_error

    # The shape of orbax's error when the disk fills during a checkpoint write (tensorstore, not an OSError).
    refused = ValueError('RESOURCE_EXHAUSTED: Error writing "params/0" in OCDBT database at local file "/w/ckpt/": '
                         'Failed writing: "/w/ckpt/d/3b58": Failed to write 5187 bytes to file 17: '
                         "No space left on device [os_error_code='28']")
    message = str(disk_error(refused, "/w"))
    assert message.startswith("cannot write '/w/ckpt/d/3b58': No space left on device.")
    assert "run the same command again to resume" in message
    # Raised while handling it (the writers closed after the first failure): the cause is still found.
    try:
        try:
            raise refused
        except ValueError:
            raise RuntimeError("closing the writer failed") from None
    except RuntimeError as later:
        later.__context__ = refused
        assert "No space left on device" in str(disk_error(later, "/w"))
    assert disk_error(ValueError("shapes (3,) and (4,) differ"), "/w") is None
    assert disk_error(ValueError("Failed to open file [os_error_code='2']"), "/w") is None  # ENOENT: not the disk
