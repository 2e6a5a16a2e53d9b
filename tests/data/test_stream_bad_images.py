"""A streamed image folder's undecodable images through a whole run: named and exit 2, or skipped and counted."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDER = str(ROOT / "experiments" / "configs" / "image_folder.py")
# LeNet-5 on 28x28 grayscale images streamed at 28 px, one short epoch.
TINY_STREAM = ("--config.model.name=lenet5", "--config.batch_size=8", "--config.num_epochs=1",
               "--config.data.streaming=True", "--config.data.image_size=28", "--config.data.augment.flip=False",
               "--config.progress_bar=False", "--config.tensorboard=False")


def _folder_with_a_test_split(write_image_folder, root: Path) -> None:
    """`root/train` as `write_image_folder` makes it and a `root/test` split of copies of some of its images."""
    write_image_folder(root)
    for c in range(2):
        (root / "test" / f"class{c}").mkdir(parents=True)
        for i in range(3):
            (root / "test" / f"class{c}" / f"{i:03d}.png").write_bytes(
                (root / "train" / f"class{c}" / f"{i:03d}.png").read_bytes())


def test_undecodable_image_met_mid_run_is_named_and_exits_2(run_cli, write_image_folder, tmp_path):
    # In the test split, so that neither the channel probe nor the statistics sample reads it: the
    # evaluation stream meets it after training.
    _folder_with_a_test_split(write_image_folder, tmp_path / "tree")
    (tmp_path / "tree" / "test" / "class1" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_cli(f"--config={FOLDER}", f"--workdir={tmp_path / 'run'}", f"--config.data.path={tmp_path / 'tree'}",
                     *TINY_STREAM)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"Cannot decode image 'test/class1/x.png' in '{tmp_path / 'tree'}'" in errors[0]
    assert "--config.data.bad_images=skip" in errors[0]


@pytest.mark.slow  # ~40 s on the 2-core machine: a whole run with two evaluations
def test_skipped_streamed_images_are_reported_in_the_summary(load_config, write_image_folder, tmp_path):
    from cnnjax.training.train import train_and_evaluate

    _folder_with_a_test_split(write_image_folder, tmp_path / "tree")
    (tmp_path / "tree" / "train" / "class0" / "x.jpg").write_bytes(b"not an image")  # met by the statistics sample
    (tmp_path / "tree" / "test" / "class1" / "y.png").write_bytes(b"not an image")  # met by the evaluation stream
    config = load_config("image_folder")
    config.data.path = str(tmp_path / "tree")
    config.data.bad_images = "skip"
    config.data.streaming, config.data.image_size = True, 28
    config.data.validation_fraction = 0.0
    config.model.name = "lenet5"
    config.batch_size, config.num_epochs = 8, 1
    config.data.augment.flip = False
    config.progress_bar = config.tensorboard = False
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["data/skipped_images"] == 2
    assert sorted(summary["data/skipped_first"]) == ["test/class1/y.png", "train/class0/x.jpg"]
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["data/skipped_images"] == 2 and written["data/skipped_first"] == summary["data/skipped_first"]
