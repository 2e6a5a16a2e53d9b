"""Bad input of every kind exits 2 with one message naming the culprit; no traceback, nothing written."""

import json
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")
FOLDER = str(ROOT / "experiments" / "configs" / "image_folder.py")
# A tiny image-folder job: LeNet-5 on 28x28 grayscale images, one short epoch.
TINY_FOLDER = ("--config.model.name=lenet5", "--config.batch_size=8", "--config.num_epochs=1",
               "--config.data.augment.crop_padding=0", "--config.data.augment.flip=False",
               "--config.progress_bar=False", "--config.tensorboard=False")


def _assert_clean_error(result, workdir: Path, *culprits: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    for culprit in culprits:
        assert culprit in result.stderr, result.stderr
    assert not workdir.exists(), "nothing may be written for bad input"


@pytest.mark.parametrize(
    ("flags", "culprits"),
    [
        (["--config.optimizer.learning_rat=0.1"],
         ["unknown config key 'optimizer.learning_rat'", "did you mean --config.optimizer.learning_rate?"]),
        (["--config.optimzer.momentum=0.5"], ["'optimzer.momentum'", "did you mean --config.optimizer.momentum?"]),
        (["--config.batch_size=abc"], ["--config.batch_size=abc", "invalid literal for int()"]),
        (["--cpu_devices=-1"], ["--cpu_devices must be >= 0"]),
        (["stray_argument"], ["unexpected arguments 'stray_argument'"]),
    ],
    ids=["misspelt-key", "misspelt-block", "bad-literal", "negative-devices", "stray-argument"],
)
def test_bad_flags(run_cli, tmp_path, flags, culprits):
    workdir = tmp_path / "run"
    result = run_cli(f"--config={DEFAULT}:smoke", f"--workdir={workdir}", *flags)
    _assert_clean_error(result, workdir, *culprits)


def test_unknown_config_variant_names_the_valid_ones(run_cli, tmp_path):
    result = run_cli(f"--config={DEFAULT}:smok", f"--workdir={tmp_path / 'run'}")
    _assert_clean_error(result, tmp_path / "run", "Unknown variant 'smok'; valid: smoke")


def test_missing_config_file(run_cli, tmp_path):
    result = run_cli(f"--config={tmp_path / 'nope.py'}", f"--workdir={tmp_path / 'run'}")
    _assert_clean_error(result, tmp_path / "run", f"--config={tmp_path / 'nope.py'}", "No such file or directory")


def test_workdir_that_is_a_file(run_cli, tmp_path):
    workdir = tmp_path / "run.txt"
    workdir.write_text("keep me")
    result = run_cli(f"--config={DEFAULT}:smoke", f"--workdir={workdir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--workdir='{workdir}' is a file" in result.stderr
    assert workdir.read_text() == "keep me"


@pytest.mark.parametrize(
    ("flags", "culprits"),
    [
        (["--config.model.kernel_init=orthogonal", "--config.model.activation=swish",
          "--config.data.bad_images=ignore"],
         ["model.kernel_init='orthogonal' is unknown; valid choices: zeros, normal, xavier_uniform",
          "model.activation='swish' is unknown; valid choices: relu, tanh",
          "data.bad_images='ignore' is unknown; valid choices: error, skip"]),
        # A single run does not read these blocks, but a bad value in them is a bad config.
        (["--config.sweep.sampler=bayes", "--config.monitor.dead_fraction=0", "--config.babysit.examples=1"],
         ["sweep.sampler='bayes' is unknown; valid choices: random, grid, quasi_random, tpe",
          "monitor.dead_fraction must be in (0, 1), got 0", "babysit.examples must be >= 2, got 1"]),
    ],
    ids=["model-and-data-options", "sweep-monitor-babysit-blocks"],
)
def test_bad_values_are_validated_up_front_all_in_one_message(run_cli, tmp_path, flags, culprits):
    workdir = tmp_path / "run"
    result = run_cli(f"--config={DEFAULT}:smoke", f"--workdir={workdir}", *flags)
    _assert_clean_error(result, workdir, "Invalid config:", *culprits)
    assert result.stderr.count("error:") == 1, result.stderr


def test_missing_data_path(run_cli, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(f"--config={FOLDER}", f"--workdir={workdir}", f"--config.data.path={tmp_path / 'nowhere'}")
    _assert_clean_error(result, workdir, f"data.path='{tmp_path / 'nowhere'}' does not exist")


def test_truncated_archive(run_cli, write_image_folder, tmp_path):
    write_image_folder(tmp_path / "tree", per_class=40)
    archive = tmp_path / "digits.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname=".")
    archive.write_bytes(archive.read_bytes()[:-2000])
    workdir = tmp_path / "run"
    result = run_cli(f"--config={FOLDER}", f"--workdir={workdir}", f"--config.data.path={archive}", *TINY_FOLDER)
    _assert_clean_error(result, workdir, f"Archive '{archive}' (data.path) is truncated or corrupt")


def test_unreadable_image_is_named_and_skip_is_offered(run_cli, write_image_folder, tmp_path):
    write_image_folder(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "class1" / "x.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    workdir = tmp_path / "run"
    result = run_cli(f"--config={FOLDER}", f"--workdir={workdir}", f"--config.data.path={tmp_path / 'tree'}",
                     *TINY_FOLDER)
    _assert_clean_error(result, workdir, "Cannot decode image 'train/class1/x.jpg'", "--config.data.bad_images=skip")


def test_skipped_images_are_reported_in_the_summary(load_config, write_image_folder, tmp_path):
    from cnnjax.training.train import train_and_evaluate

    write_image_folder(tmp_path / "tree")
    for name in ("x.jpg", "y.png"):
        (tmp_path / "tree" / "train" / "class0" / name).write_bytes(b"not an image")
    config = load_config("image_folder")
    config.data.path = str(tmp_path / "tree")
    config.data.bad_images = "skip"
    config.data.validation_fraction = config.data.test_fraction = 0.2
    config.model.name = "lenet5"
    config.batch_size, config.num_epochs = 4, 1
    config.data.augment.crop_padding, config.data.augment.flip = 0, False
    config.progress_bar = config.tensorboard = False
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["data/skipped_images"] == 2
    assert sorted(summary["data/skipped_first"]) == ["train/class0/x.jpg", "train/class0/y.png"]
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["data/skipped_images"] == 2
