"""`--mode=eval` decodes the folder it will score while it starts: the same record, or no use of a wrong guess."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from cnnjax.inference import prefetch
from cnnjax.inference.evaluate import evaluate_run
from cnnjax.inference.run_config import read_run_config
from cnnjax.main import _raw_flags


@pytest.fixture()
def folders(run_copy, tmp_path, monkeypatch):
    """Two test folders of the run's own test images (the second holds 10 fewer) and a claim spy."""
    from cnnjax.data.one_split import load_one_split

    images, names = load_one_split(read_run_config(run_copy).data, "test")
    roots = []
    for count in (70, 60):
        root = tmp_path / f"folder{count}"
        for i, (image, name) in enumerate(zip(images[:count], names[:count])):
            os.makedirs(root / "test" / name, exist_ok=True)
            Image.fromarray(image[..., 0]).save(root / "test" / name / f"{i:04d}.png")
        roots.append(str(root))
    monkeypatch.setattr(prefetch, "helper_count", lambda n: 1)  # a helper even for few images, on a busy host
    claims = []
    original = prefetch.claim
    monkeypatch.setattr(prefetch, "claim", lambda path, files: claims.append(original(path, files)) or claims[-1])
    monkeypatch.setattr("cnnjax.inference.eval_data.prefetch", prefetch)
    yield roots, claims
    prefetch._started.clear()


def _evaluate(workdir, root):
    config = read_run_config(workdir)
    config.data.name, config.data.path = "image_folder", root
    config.eval_batch_size = 8
    return evaluate_run(workdir, config)


def test_a_folder_decoded_while_the_command_starts_gives_the_same_record(run_copy, folders):
    (root, _), claims = folders
    want = _evaluate(run_copy, root)
    assert claims == [None]  # nothing was started
    prefetch.start(run_copy, {"name": "image_folder", "path": root})
    decoder = prefetch._started["decoder"]
    got = _evaluate(run_copy, root)
    assert claims[-1] is decoder and not prefetch._started
    assert got == want and got["num_examples"] == 70
    assert not any(thread.is_alive() for thread in decoder._threads)


def test_a_wrong_guess_is_stopped_and_not_used(run_copy, folders):
    (root70, root60), claims = folders
    prefetch.start(run_copy, {"name": "'image_folder'", "path": root70})  # a quoted value is read as Python
    decoder = prefetch._started["decoder"]
    record = _evaluate(run_copy, root60)
    assert claims == [None] and not prefetch._started
    assert not any(thread.is_alive() for thread in decoder._threads)
    assert record["num_examples"] == 60


def test_nothing_starts_without_a_folder_to_guess(run_copy, folders, tmp_path):
    (root, _), _ = folders
    prefetch.start(run_copy, {})  # the run's own data is not a folder
    prefetch.start(str(tmp_path / "no_run"), {"name": "image_folder", "path": root})  # no config.json
    prefetch.start(run_copy, {"name": "image_folder", "path": str(tmp_path / "missing")})
    assert not prefetch._started


def test_raw_flags_reads_both_spellings_and_the_last_one_wins():
    argv = ["--mode", "eval", "--workdir=/r", "--config.data.path=a=b", "--allow_config_change",
            "--config.data.name", "image_folder", "--workdir=/s"]
    assert _raw_flags(argv) == {"mode": "eval", "workdir": "/s", "config.data.path": "a=b",
                                "config.data.name": "image_folder"}
