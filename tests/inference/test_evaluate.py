"""--mode=eval: the run's own test split reproduces its summary; other data; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnjax.inference.evaluate import classification_metrics, evaluate_run
from cnnjax.inference.restore import InferenceError, convert_images, restore_run
from cnnjax.inference.run_config import read_run_config
from tests.inference.conftest import cli, cli_env, snapshot


def _folder_of(images, names, root, split="test"):
    for i, (image, name) in enumerate(zip(images, names)):
        os.makedirs(root / split / name, exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / split / name / f"{i:04d}.png")
    return str(root)


def test_own_test_split_matches_the_summary_and_only_named_files_change(run_copy):
    before = snapshot(run_copy)
    summary = json.load(open(os.path.join(run_copy, "summary.json")))
    record = evaluate_run(run_copy, read_run_config(run_copy))
    assert record["accuracy"] == pytest.approx(summary["eval/accuracy"], abs=1e-9)
    assert record["loss"] == pytest.approx(summary["eval/loss"], rel=1e-4)
    assert record["num_examples"] == 500 and record["checkpoint_step"] == summary["steps"]
    assert set(record["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert json.load(open(os.path.join(run_copy, "eval.json")))["accuracy"] == record["accuracy"]
    after = snapshot(run_copy)
    assert {k for k in after if after[k] != before.get(k)} == {"eval.json", "confusion_matrix.png"}


def test_another_split_by_override_matches_the_runs_validation_figure(run_copy):
    summary = json.load(open(os.path.join(run_copy, "summary.json")))
    config = read_run_config(run_copy)
    config.data.test_split = "validation"
    record = evaluate_run(run_copy, config)
    assert record["accuracy"] == pytest.approx(summary["val/accuracy"], abs=1e-9)
    assert record["data"]["test_split"] == "validation"


def test_a_folder_holding_only_test_images_is_scored_like_the_arrays(run_copy):
    from cnnjax.data.one_split import load_one_split

    config = read_run_config(run_copy)
    images, names = load_one_split(config.data, "test")
    images, names = images[:60], names[:60]
    root = _folder_of(images, names, Path(run_copy).parent / "folder")
    run = restore_run(run_copy)
    labels = np.array([run.class_names.index(n) for n in names])
    expected = classification_metrics(run.predict_logits(images, 7), labels, run.class_names)
    config.data.name, config.data.path = "image_folder", root
    config.eval_batch_size = 4  # 16 images a chunk: the folder is decoded and scored in 4 chunks, the last short
    record = evaluate_run(run_copy, config)
    assert record["num_examples"] == 60
    assert record["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-9)
    assert record["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert record["top5_accuracy"] == pytest.approx(expected["top5_accuracy"], abs=1e-9)
    assert record["data"]["name"] == "image_folder"


def test_streamed_folder_with_gray_and_colour_images_matches_the_whole_split_load(run_copy, tmp_path):
    """Chunks of gray-only and mixed images get the numbers of one whole-split load and conversion."""
    from cnnjax.data.one_split import load_one_split
    from cnnjax.inference.eval_data import open_eval_images

    config = read_run_config(run_copy)
    images, names = load_one_split(config.data, "test")
    root = tmp_path / "folder"
    for i, (image, name) in enumerate(zip(images[:24], names[:24])):
        os.makedirs(root / "test" / name, exist_ok=True)
        colour = np.concatenate([image, image // 2, 255 - image], axis=-1)  # RGB for every 5th image
        Image.fromarray(colour if i % 5 == 0 else image[..., 0]).save(root / "test" / name / f"{i:04d}.png")
    config.data.name, config.data.path = "image_folder", str(root)
    run = restore_run(run_copy)
    whole, whole_names = load_one_split(config.data, "test")
    assert whole.shape[-1] == 3  # the whole split is colour; the run's input is gray
    expected = convert_images(whole, run.image_shape, "x")
    data = open_eval_images(run, config.data)
    chunks = list(data.chunks(4))
    assert [len(c[0]) for c in chunks] == [4] * 6
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), expected)
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]),
                                  [run.class_names.index(n) for n in whole_names])


def test_an_undecodable_image_is_an_error_or_skipped_as_data_bad_images_says(run_copy, tmp_path):
    image = np.zeros((28, 28, 1), np.uint8)
    root = _folder_of([image] * 6, ["3", "3", "4", "4", "5", "5"], tmp_path / "folder")
    bad = os.path.join(root, "test", "4", "0002.png")
    with open(bad, "wb") as f:
        f.write(b"not a png")
    config = read_run_config(run_copy)
    config.data.name, config.data.path, config.eval_batch_size = "image_folder", root, 2
    with pytest.raises(InferenceError, match="Cannot decode image 'test/4/0002.png'.*bad_images=skip"):
        evaluate_run(run_copy, config)
    assert not os.path.exists(os.path.join(run_copy, "eval.json"))
    config.data.bad_images = "skip"
    record = evaluate_run(run_copy, config)
    assert record["num_examples"] == 5 and record["skipped_images"] == ["test/4/0002.png"]


def test_unknown_class_names_are_an_error_naming_them(run_copy, tmp_path):
    image = np.zeros((28, 28, 1), np.uint8)
    root = _folder_of([image, image, image], ["3", "cat", "dog"], tmp_path / "folder")
    config = read_run_config(run_copy)
    config.data.name, config.data.path = "image_folder", root
    with pytest.raises(InferenceError, match="classes the run was not trained on: cat, dog"):
        evaluate_run(run_copy, config)
    assert not os.path.exists(os.path.join(run_copy, "eval.json"))


def test_an_old_run_without_data_info_recomputes_the_statistics(run_copy, trained_run):
    os.remove(os.path.join(run_copy, "data_info.json"))
    old = restore_run(run_copy)
    new = restore_run(trained_run[0])
    np.testing.assert_allclose(old.mean, new.mean, rtol=1e-6)
    np.testing.assert_allclose(old.std, new.std, rtol=1e-6)
    assert old.class_names == new.class_names


def test_missing_step_lists_the_available_ones(trained_run):
    step = trained_run[1]["steps"]
    with pytest.raises(InferenceError, match=f"no checkpoint at that step; available steps: {step}"):
        restore_run(trained_run[0], step=step + 1)


def test_channel_conversion_and_resizing():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    gray = convert_images(rgb, (4, 4, 1), "x")
    expected = np.asarray(Image.fromarray(rgb[0]).convert("L"))
    assert np.abs(gray[0, ..., 0].astype(int) - expected).max() <= 1  # PIL rounds in fixed point
    assert convert_images(gray, (8, 8, 3), "x").shape == (2, 8, 8, 3)
    with pytest.raises(InferenceError, match=r"shape \(4, 4, 2\) cannot be converted"):
        convert_images(rgb[..., :2], (4, 4, 3), "x")


def test_cli_eval_prints_and_refuses_a_workdir_without_checkpoint(trained_run, tmp_path):
    result = subprocess.run(cli("--mode=eval", f"--workdir={trained_run[0]}", "--config.eval_batch_size=100"),
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("Eval:"))
    assert f"accuracy={trained_run[1]['eval/accuracy']:.4f}" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(open(os.path.join(trained_run[0], "config.json")).read())
    result = subprocess.run(cli("--mode=eval", f"--workdir={empty}"), capture_output=True, text=True,
                            env=cli_env(), timeout=300)
    assert result.returncode == 2
    assert "has no checkpoint" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(empty)) == ["config.json"]


def test_overrides_outside_data_are_refused(trained_run):
    from cnnjax.inference.modes import check_overrides

    config = read_run_config(trained_run[0])
    config.data.max_eval_examples, config.eval_batch_size = 10, 7
    check_overrides(trained_run[0], config)
    config.model.name, config.optimizer.learning_rate = "resnet18", 1.0
    with pytest.raises(InferenceError, match="got model.name, optimizer.learning_rate"):
        check_overrides(trained_run[0], config)


# The CLI with the data loader standing in for a data set of 2-channel images (no image folder or
# built-in set has such images; a TFDS set can), and any compile turned into a crash.
TWO_CHANNEL_CLI = (
    "import sys, numpy as np; import cnnjax.data.one_split as one; import cnnjax.inference.restore as restore; "
    "one.load_one_split = lambda data, split='test': (np.zeros((3, 28, 28, 2), np.uint8), ['0', '1', '2']); "
    "restore.RestoredRun._chunk_program = lambda *a, **k: sys.exit('compiled before the data was checked'); "
    "from cnnjax.main import run; sys.argv = ['cnnjax', *sys.argv[1:]]; run()"
)


def test_cli_eval_refuses_data_whose_channels_cannot_match_the_checkpoint(run_copy):
    before = snapshot(run_copy)
    result = subprocess.run([sys.executable, "-c", TWO_CHANNEL_CLI, "--mode=eval", f"--workdir={run_copy}"],
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: data.name=mnist5k: images of shape (28, 28, 2) cannot be converted to the run's input (28, 28, 1); "
        "only 1 (gray), 3 (RGB) or 4 (RGBA) channels can be converted."
    ], result.stderr
    assert "Traceback" not in result.stderr and "compiled" not in result.stderr
    assert snapshot(run_copy) == before
