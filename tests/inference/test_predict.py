"""--mode=predict: CSV rows equal the model's softmax; folders, archives, unreadable files."""

from __future__ import annotations

import csv
import os
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from cnnjax.inference.predict import image_sources, predict_run, softmax
from cnnjax.inference.restore import InferenceError, restore_run
from cnnjax.inference.run_config import read_run_config
from tests.inference.conftest import cli, cli_env


@pytest.fixture(scope="module")
def images_dir(trained_run, tmp_path_factory):
    """12 test digits as PNGs in nested folders, plus one RGB image at another size and one broken file."""
    from cnnjax.data.one_split import load_one_split

    images, _ = load_one_split(read_run_config(trained_run[0]).data, "test")
    root = tmp_path_factory.mktemp("images")
    for i, image in enumerate(images[:12]):
        os.makedirs(root / f"sub{i % 2}", exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / f"sub{i % 2}" / f"{i:02d}.png")
    Image.fromarray(np.full((40, 56, 3), 200, np.uint8)).save(root / "big_rgb.jpg")
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    return root, images[:12]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_rows_match_the_models_softmax_and_the_broken_file_is_skipped(trained_run, images_dir, tmp_path):
    root, images = images_dir
    out = str(tmp_path / "p.csv")
    result = predict_run(trained_run[0], read_run_config(trained_run[0]), str(root), out)
    assert result["predicted"] == 13 and result["skipped"] == 1
    assert result["skipped_files"][0][0].endswith("broken.png")
    rows = {os.path.relpath(r["path"], root): r for r in _rows(out)}
    assert list(_rows(out)[0]) == ["path", "label", "probability"] + [
        f"top{k}_{c}" for k in range(2, 6) for c in ("label", "probability")]
    run = restore_run(trained_run[0])
    probs = softmax(run.predict_logits(images, 5))
    for i in range(12):
        row = rows[f"sub{i % 2}/{i:02d}.png"]
        order = np.argsort(-probs[i])
        assert row["label"] == run.class_names[order[0]]
        assert float(row["probability"]) == pytest.approx(probs[i, order[0]], abs=2e-6)
        assert row["top2_label"] == run.class_names[order[1]]
    assert "big_rgb.jpg" in rows  # resized and converted to grayscale


def test_an_archive_gives_the_same_predictions_as_the_folder(trained_run, images_dir, tmp_path):
    root, _ = images_dir
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="imgs")
    config = read_run_config(trained_run[0])
    predict_run(trained_run[0], config, str(root), str(tmp_path / "a.csv"))
    predict_run(trained_run[0], config, str(archive), str(tmp_path / "b.csv"))
    folder = {os.path.relpath(r["path"], root): r["probability"] for r in _rows(tmp_path / "a.csv")}
    packed = {os.path.relpath(r["path"], "imgs"): r["probability"] for r in _rows(tmp_path / "b.csv")}
    assert folder == packed


def test_small_batches_stream_several_chunks_with_the_same_rows(trained_run, images_dir, tmp_path):
    root, _ = images_dir
    config = read_run_config(trained_run[0])
    predict_run(trained_run[0], config, str(root), str(tmp_path / "a.csv"))
    config.eval_batch_size = 2  # 8 images a chunk: 14 files (one broken) in 2 chunks
    result = predict_run(trained_run[0], config, str(root), str(tmp_path / "b.csv"))
    assert result["predicted"] == 13 and result["skipped"] == 1
    whole, streamed = _rows(tmp_path / "a.csv"), _rows(tmp_path / "b.csv")
    assert [r["path"] for r in whole] == [r["path"] for r in streamed]
    assert [r["label"] for r in whole] == [r["label"] for r in streamed]
    np.testing.assert_allclose([float(r["probability"]) for r in streamed],
                               [float(r["probability"]) for r in whole], atol=2e-6)


def test_a_path_without_images_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InferenceError, match="holds no image file"):
        image_sources(str(tmp_path))


def test_cli_predict_reports_the_unreadable_file_without_a_traceback(run_copy, images_dir, tmp_path):
    root, _ = images_dir
    result = subprocess.run(cli("--mode=predict", f"--workdir={run_copy}", f"--images={root}"),
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "broken.png" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("Predict: 13 images labelled, 1 unreadable skipped")
    assert len(_rows(os.path.join(run_copy, "predictions.csv"))) == 13
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(cli("--mode=predict", f"--workdir={run_copy}", f"--images={empty}",
                                f"--predictions={tmp_path / 'x.csv'}"),
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 2 and "holds no image file" in result.stderr
    assert not (tmp_path / "x.csv").exists()
