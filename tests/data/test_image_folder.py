"""Image folders from directories and tarballs, including the real CIFAR-10 archive."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from cnnjax.data import DataError, decode_workers, load_dataset
from cnnjax.data.image_folder import load_image_folder
from experiments import common

CIFAR_ARCHIVE = common.CIFAR_ARCHIVE
REPO_ROOT = Path(__file__).resolve().parents[2]


def _write_tree(root: Path, layout: dict[str, dict[str, int]], size=(5, 4), mode="RGB") -> None:
    """Writes PNGs ``root/split/class/NNN.png``; pixel (0, 0) holds a unique id.

    The id is ``40 * class_position + index``, where class_position is the
    class's place in the layout dict, so tests can tell which file a decoded
    image came from.
    """
    for split, classes in layout.items():
        for position, (class_name, count) in enumerate(classes.items()):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                channels = 1 if mode == "L" else 3
                pixels = np.full((size[1], size[0], channels), 200, np.uint8)
                pixels[0, 0] = 40 * position + index
                Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(folder / f"{index:03d}.png")


def _ids(images: np.ndarray) -> list[int]:
    return sorted(images[:, 0, 0, 0].tolist())


def test_directory_with_train_and_test(tmp_path):
    # Class dirs deliberately out of order; 'test' lacks one class.
    _write_tree(tmp_path, {"train": {"zebra": 10, "ant": 10, "mole": 10}, "test": {"mole": 2, "zebra": 3}})
    arrays, class_names = load_image_folder(tmp_path)
    assert class_names == ("ant", "mole", "zebra")
    train_images, train_labels = arrays["train"]
    # Only validation is missing, so only 10% of each class is carved from train.
    assert train_images.shape == (27, 4, 5, 3) and train_images.dtype == np.uint8
    assert train_labels.dtype == np.int32
    assert np.bincount(train_labels).tolist() == [9, 9, 9]
    assert np.bincount(arrays["validation"][1]).tolist() == [1, 1, 1]
    # The existing test split is kept as is, with the shared class indices.
    test_images, test_labels = arrays["test"]
    assert sorted(test_labels.tolist()) == [1, 1, 2, 2, 2]
    assert _ids(test_images[test_labels == 2]) == [40, 41, 42]  # zebra is second in the 'test' layout.
    # Carving partitions train: no image is in two splits.
    train_ids = set(map(tuple, np.stack([train_images[:, 0, 0, 0], train_labels], 1).tolist()))
    val_images, val_labels = arrays["validation"]
    val_ids = set(map(tuple, np.stack([val_images[:, 0, 0, 0], val_labels], 1).tolist()))
    assert not train_ids & val_ids and len(train_ids | val_ids) == 30


def test_only_train_is_carved_and_configurable(tmp_path):
    _write_tree(tmp_path / "ds", {"train": {"a": 20, "b": 20}})
    arrays, _ = load_image_folder(tmp_path / "ds")
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 32, "validation": 4, "test": 4}
    arrays, _ = load_image_folder(tmp_path / "ds", validation_fraction=0.25, test_fraction=0.0)
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 30, "validation": 10, "test": 0}
    assert arrays["test"][0].shape == (0, 4, 5, 3)
    again, _ = load_image_folder(tmp_path / "ds", validation_fraction=0.25, test_fraction=0.0)
    np.testing.assert_array_equal(again["validation"][0], arrays["validation"][0])


def test_tarball_with_leading_directory_matches_directory(tmp_path):
    _write_tree(tmp_path / "src" / "cifar" / "data", {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2, "dog": 2}})
    archive = tmp_path / "ds.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname=".")  # Members named ./cifar/data/train/...
    from_tar, tar_classes = load_image_folder(archive)
    from_dir, dir_classes = load_image_folder(tmp_path / "src")
    assert tar_classes == dir_classes == ("cat", "dog")
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(from_tar[split][0], from_dir[split][0])
        np.testing.assert_array_equal(from_tar[split][1], from_dir[split][1])
    assert len(from_tar["validation"][1]) == 4  # 'val' is the validation split.


def test_caps_select_before_decoding(tmp_path, monkeypatch):
    _write_tree(tmp_path, {"train": {"a": 30, "b": 10}})
    decoded = []
    real_decode = decode_workers.decode_image
    monkeypatch.setattr(decode_workers, "decode_image", lambda data, name: decoded.append(name) or real_decode(data, name))
    arrays, _ = load_image_folder(tmp_path, max_examples={"train": 8}, max_per_class=5)
    assert np.bincount(arrays["train"][1]).tolist() == [4, 4]
    assert all(np.bincount(arrays[s][1], minlength=2).max() <= 5 for s in ("validation", "test"))
    assert len(decoded) == sum(len(y) for _, y in arrays.values())


def test_max_examples_is_stratified_and_nested(tmp_path):
    _write_tree(tmp_path, {"train": {"a": 30, "b": 10}})
    small, _ = load_image_folder(tmp_path, max_examples=4)
    large, _ = load_image_folder(tmp_path, max_examples=8)
    assert np.bincount(large["train"][1]).tolist() == [6, 2]  # Proportional to 24:8.

    def keys(arrays):
        images, labels = arrays["train"]
        return set(zip(images[:, 0, 0, 0].tolist(), labels.tolist()))

    assert len(keys(small)) == 4 and keys(small) <= keys(large)


def test_grayscale_and_mixed_channels(tmp_path):
    _write_tree(tmp_path / "gray", {"train": {"a": 5, "b": 5}}, mode="L")
    arrays, _ = load_image_folder(tmp_path / "gray")
    assert arrays["train"][0].shape[1:] == (4, 5, 1)
    _write_tree(tmp_path / "mixed", {"train": {"a": 5}}, mode="L")
    _write_tree(tmp_path / "mixed", {"train": {"b": 5}}, mode="RGB")
    arrays, _ = load_image_folder(tmp_path / "mixed")
    images, labels = arrays["train"]
    assert images.shape[1:] == (4, 5, 3)
    gray = images[labels == 0]
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="No images found"):
        load_image_folder(tmp_path / "empty")
    _write_tree(tmp_path / "no_train", {"test": {"a": 2}})
    with pytest.raises(ValueError, match="No 'train' split"):
        load_image_folder(tmp_path / "no_train")
    _write_tree(tmp_path / "sizes", {"train": {"a": 3}})
    _write_tree(tmp_path / "sizes", {"train": {"b": 3}}, size=(6, 6))
    with pytest.raises(ValueError, match="differ in size"):
        load_image_folder(tmp_path / "sizes")
    (tmp_path / "file.bin").write_bytes(b"plain")
    with pytest.raises(ValueError, match="neither a directory nor a tar archive"):
        load_image_folder(tmp_path / "file.bin")


def test_undecodable_image_is_an_error_naming_it_or_skipped_on_request(tmp_path):
    _write_tree(tmp_path, {"train": {"a": 10, "b": 10}, "test": {"a": 2, "b": 2}})
    (tmp_path / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"'train/b/broken.jpg'.*data.bad_images=skip"):
        load_image_folder(tmp_path)
    skipped: list[str] = []
    arrays, _ = load_image_folder(tmp_path, bad_images="skip", skipped=skipped)
    assert skipped == ["train/b/broken.jpg"]
    reference, _ = load_image_folder(tmp_path, bad_images="skip")
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(arrays[split][0], reference[split][0])
    # All 20 good training images are kept (split between train and validation), the broken one is not.
    assert len(arrays["train"][1]) + len(arrays["validation"][1]) == 20
    config = ml_collections.ConfigDict({"name": "image_folder", "path": str(tmp_path), "bad_images": "skip"})
    assert load_dataset(config).skipped_images == ("train/b/broken.jpg",)


def test_truncated_archive_is_an_error_naming_it(tmp_path):
    _write_tree(tmp_path / "tree", {"train": {"a": 40, "b": 40}})
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname=".")
    whole = archive.read_bytes()
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"data.tar.gz.*truncated or corrupt"):
        load_image_folder(archive)


def test_load_dataset_image_folder(tmp_path):
    _write_tree(tmp_path, {"train": {"a": 10, "b": 10}})
    config = ml_collections.ConfigDict(
        {"name": "image_folder", "path": str(tmp_path), "max_eval_examples": 1, "preprocess": "standardize"}
    )
    dataset = load_dataset(config)
    assert (dataset.num_classes, dataset.class_names, dataset.image_shape) == (2, ("a", "b"), (4, 5, 3))
    assert (dataset.train.num_examples, dataset.validation.num_examples, dataset.test.num_examples) == (16, 1, 1)
    assert dataset.mean.shape == dataset.std.shape == (1, 1, 3)
    with pytest.raises(ValueError, match="data.path"):
        load_dataset(ml_collections.ConfigDict({"name": "image_folder"}))


def test_image_folder_path_needs_no_tensorflow(tmp_path):
    _write_tree(tmp_path, {"train": {"a": 5, "b": 5}})
    script = textwrap.dedent(
        f"""
        import sys
        import cnnjax.data
        dataset = cnnjax.data.load_dataset(type("C", (), {{"name": "image_folder", "path": {str(tmp_path)!r}}}))
        assert dataset.train.num_examples == 8, dataset.train.num_examples
        assert "tensorflow" not in sys.modules and "tensorflow_datasets" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT)


@pytest.mark.needs_cifar10
def test_real_cifar10_archive_subset():
    start = time.perf_counter()
    arrays, class_names = load_image_folder(CIFAR_ARCHIVE, max_examples={"train": 200, "validation": 20, "test": 20})
    elapsed = time.perf_counter() - start
    assert class_names == (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    images, labels = arrays["train"]
    assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [20] * 10
    assert len(arrays["validation"][1]) == len(arrays["test"][1]) == 20
    assert 40 < images.mean() < 220  # Real photographs, not blank decodes.
    assert elapsed < 30, f"loading a 240-image subset took {elapsed:.1f}s"


def test_folder_listing_matches_pathlib_with_links_and_hidden_files(tmp_path):
    from cnnjax.data.archive import _folder_files

    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.png").write_bytes(b"1")
    (tmp_path / "train" / "b").mkdir()
    (tmp_path / "train" / "b" / ".hidden.png").write_bytes(b"1")
    (tmp_path / "train" / "b" / "link.png").symlink_to(tmp_path / "train" / "a" / "x.png")
    (tmp_path / "train" / "b" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "train" / "linked_folder").symlink_to(tmp_path / "train" / "a")
    expected = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert sorted(_folder_files(str(tmp_path))) == expected == ["train/a/x.png", "train/b/.hidden.png",
                                                                 "train/b/link.png"]
