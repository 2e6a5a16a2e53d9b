"""Streaming input: TFDS and image-folder streams, per-process shares, padding, prefetch.

The images are uniform colours (see ``stream_image`` in conftest.py), so an example's
id can be read back from any crop, flip or resize of it.
"""

from __future__ import annotations

import shutil
import tarfile

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from cnnjax.data import DataError, host_augment, stream_stats, streaming

SIZE = 16
STREAM_TRAIN, STREAM_TEST = 26, 6  # conftest's stream_jpeg (checked in test_info_tfds)


def _config(**overrides) -> ml_collections.ConfigDict:
    values = {
        "name": "stream_jpeg",
        "data_dir": None,
        "download": False,
        "path": None,
        "train_split": "train",
        "validation_split": "test",
        "test_split": "test",
        "max_train_examples": None,
        "max_eval_examples": None,
        "validation_fraction": 0.1,
        "test_fraction": 0.1,
        "preprocess": "standardize",
        "augment": {"flip": True, "crop_padding": 0},
        "image_size": SIZE,
        "shuffle_buffer": 64,
    }
    values.update(overrides)
    return ml_collections.ConfigDict(values)


@pytest.fixture
def tfds_config(stream_tfds):
    return _config(data_dir=stream_tfds.data_dir)


@pytest.fixture(scope="module")
def stream_image(stream_tfds):
    return stream_tfds.image


@pytest.fixture(scope="module")
def stream_ids(stream_tfds):
    return stream_tfds.ids


FOLDER_CLASSES = ("cat", "dog", "owl")
FOLDER_TRAIN_PER_CLASS = 6
FOLDER_TEST_PER_CLASS = 2


@pytest.fixture(scope="module")
def folder(tmp_path_factory, stream_image):
    """``root/{train,test}/<class>/<id>.jpg`` and the same tree as a .tar.gz; ids are unique."""
    root = tmp_path_factory.mktemp("stream_folder") / "images"
    next_id = 0
    for split, per_class in (("train", FOLDER_TRAIN_PER_CLASS), ("test", FOLDER_TEST_PER_CLASS)):
        for label, class_name in enumerate(FOLDER_CLASSES):
            (root / split / class_name).mkdir(parents=True)
            for _ in range(per_class):
                image = stream_image(next_id, split)
                image[..., 2] = 40 * label + 20
                Image.fromarray(image).save(root / split / class_name / f"{next_id:03d}.jpg", quality=95)
                next_id += 1
    archive = root.parent / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="images")
    return root, archive


def _label_of(images: np.ndarray) -> np.ndarray:
    """The label a uniform image carries in channel 2."""
    return np.rint((images[..., 2].reshape(len(images), -1).mean(axis=1) - 20) / 40).astype(int)


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_info_tfds(tfds_config, stream_tfds, stream_image):
    info = streaming.streaming_info(tfds_config)
    assert (info.name, info.num_classes, info.class_names) == ("stream_jpeg", 4, ("a", "b", "c", "d"))
    assert info.num_train_examples == STREAM_TRAIN == stream_tfds.num_train
    assert STREAM_TEST == stream_tfds.num_test
    assert info.num_eval_examples == {"validation": STREAM_TEST, "test": STREAM_TEST}
    assert info.image_shape == (SIZE, SIZE, 3)
    assert info.stats_source == f"sample of {STREAM_TRAIN} training images"
    # Uniform images: the estimate is the mean of the fill colours, in [0, 1] units.
    fills = np.array([stream_image(i, "train")[0, 0] for i in range(STREAM_TRAIN)], np.float64) / 255
    np.testing.assert_allclose(info.mean.ravel(), fills.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(info.std.ravel(), fills.std(axis=0), atol=0.01)
    assert info.mean.shape == info.std.shape == (1, 1, 3) and info.mean.dtype == np.float32

    none = streaming.streaming_info(_config(data_dir=tfds_config.data_dir, preprocess="none"))
    assert none.stats_source == "none" and not none.mean.any() and (none.std == 1).all()


def test_imagenet_like_sets_use_imagenet_statistics(tfds_config, monkeypatch):
    assert stream_stats.is_imagenet_like("imagenet2012:5.1.0") and stream_stats.is_imagenet_like("imagenette/320px-v2")
    assert not stream_stats.is_imagenet_like("cifar10")
    monkeypatch.setattr(stream_stats, "is_imagenet_like", lambda name: True)
    info = streaming.streaming_info(tfds_config)
    assert info.stats_source == "imagenet"
    np.testing.assert_allclose(info.mean.ravel(), stream_stats.IMAGENET_MEAN)
    np.testing.assert_allclose(info.std.ravel(), stream_stats.IMAGENET_STD)


def test_train_stream_shapes_labels_and_process_shares(tfds_config, stream_ids):
    seen = []
    for index in range(2):
        stream = streaming.train_stream(tfds_config, global_batch_size=8, seed=3, process_index=index, process_count=2)
        batches = _take(stream, 12)  # 48 examples: several epochs of a 13-example share.
        for batch in batches:
            assert set(batch) == {"image", "label"}
            assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
            assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
            np.testing.assert_array_equal(batch["label"], stream_ids(batch["image"]) % 4)
            assert (np.abs(batch["image"][..., 1].astype(int) - 60) <= 3).all()  # Train images only.
        seen.append(set(np.concatenate([stream_ids(b["image"]) for b in batches]).tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(STREAM_TRAIN))
    assert len(seen[0]) == len(seen[1]) == STREAM_TRAIN // 2


def test_train_stream_is_deterministic_per_seed(tfds_config):
    def first(seed):
        stream = streaming.train_stream(tfds_config, global_batch_size=4, seed=seed, process_index=0, process_count=1)
        return np.concatenate([b["image"] for b in _take(stream, 4)])

    np.testing.assert_array_equal(first(7), first(7))
    assert not np.array_equal(first(7), first(8))


def test_eval_stream_covers_each_example_once(tfds_config, stream_ids):
    counts = {}
    for index in range(2):
        batches = list(
            streaming.eval_stream(tfds_config, "test", global_batch_size=4, process_index=index, process_count=2)
        )
        counts[index] = len(batches)
        images = np.concatenate([b["image"] for b in batches])
        mask = np.concatenate([b["mask"] for b in batches])
        labels = np.concatenate([b["label"] for b in batches])
        assert images.shape[1:] == (SIZE, SIZE, 3) and mask.dtype == np.float32
        assert mask.tolist() == [1, 1, 1, 0]  # 3 of 6 test examples, padded to 2 batches of 2.
        real = mask == 1
        assert (images[~real] == 0).all() and (labels[~real] == 0).all()
        ids = stream_ids(images[real])
        np.testing.assert_array_equal(labels[real], ids % 4)
        assert (np.abs(images[real][..., 1].astype(int) - 180) <= 3).all()  # Test images only.
        counts[f"ids{index}"] = set(ids.tolist())
    assert counts[0] == counts[1] == 2
    assert not counts["ids0"] & counts["ids1"] and counts["ids0"] | counts["ids1"] == set(range(STREAM_TEST))

    single = list(streaming.eval_stream(tfds_config, "validation", global_batch_size=8, process_index=0, process_count=1))
    assert len(single) == 1 and single[0]["mask"].sum() == STREAM_TEST


def test_image_folder_directory_and_tarball(folder, stream_ids, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    root, archive = folder
    results = {}
    for path in (root, archive):
        config = _config(name="image_folder", path=str(path), train_split=None, validation_split=None, test_split=None)
        info = streaming.streaming_info(config)
        assert info.class_names == FOLDER_CLASSES and info.image_shape == (SIZE, SIZE, 3)
        # validation carved from train: 1 of 6 per class, as the in-memory loader does.
        assert info.num_train_examples == 15 and info.num_eval_examples == {"validation": 3, "test": 6}
        shares = []
        for index in range(2):
            stream = streaming.train_stream(config, global_batch_size=6, seed=0, process_index=index, process_count=2)
            batches = _take(stream, 6)
            images = np.concatenate([b["image"] for b in batches])
            np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), _label_of(images))
            shares.append(set(stream_ids(images).tolist()))
        assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == info.num_train_examples
        test = list(streaming.eval_stream(config, "test", global_batch_size=4, process_index=0, process_count=1))
        results[path] = np.concatenate([b["image"] for b in test])
        assert [b["mask"].sum() for b in test] == [4, 2]
    np.testing.assert_array_equal(results[root], results[archive])
    assert len(list((tmp_path / "cache").glob("images-*.tar"))) == 1  # Decompressed once, reused.


def test_undecodable_images_stop_the_stream_or_are_skipped_on_request(folder, stream_ids, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJAX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "images"
    shutil.copytree(folder[0], root)
    broken = b"\xff\xd8\xff not really a jpeg"
    (root / "test" / "dog" / "999.jpg").write_bytes(broken)
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="images")
    first_test = len(FOLDER_CLASSES) * FOLDER_TRAIN_PER_CLASS  # the fixture numbers train images first
    good_test = set(range(first_test, first_test + len(FOLDER_CLASSES) * FOLDER_TEST_PER_CLASS))
    for path, bad in ((root, "test/dog/999.jpg"), (archive, "images/test/dog/999.jpg")):  # a member's full name
        config = _config(name="image_folder", path=str(path), train_split=None, validation_split=None, test_split=None)
        with pytest.raises(DataError, match=rf"^Cannot decode image '{bad}' in '{path}'.*data.bad_images=skip"):
            list(streaming.eval_stream(config, "test", global_batch_size=4, process_index=0, process_count=1))
        config.bad_images = "ignore"
        with pytest.raises(DataError, match="data.bad_images='ignore' is unknown; valid choices: error, skip"):
            streaming.streaming_info(config)
        config.bad_images = "skip"
        assert streaming.streaming_info(config).num_eval_examples["test"] == 7  # Files are counted, not decoded.
        skipped: list[str] = []
        for _ in range(2):  # a file met again is recorded once
            test = list(streaming.eval_stream(config, "test", global_batch_size=4, process_index=0, process_count=1,
                                              skipped=skipped))
            mask = np.concatenate([b["mask"] for b in test]) == 1
            assert len(test) == 2 and mask.sum() == 6  # The six good images, padded to the batches of seven files.
            assert set(stream_ids(np.concatenate([b["image"] for b in test])[mask]).tolist()) == good_test
            assert skipped == [bad]
    # A broken training image in the statistics sample is named before any stream starts.
    (root / "train" / "cat" / "998.jpg").write_bytes(broken)
    config = _config(name="image_folder", path=str(root), train_split=None, validation_split=None, test_split=None,
                     validation_fraction=0.0)
    with pytest.raises(DataError, match=r"^Cannot decode image 'train/cat/998.jpg' in .*data.bad_images=skip"):
        streaming.streaming_info(config)
    config.bad_images = "skip"
    skipped = []
    assert streaming.streaming_info(config, skipped=skipped).image_shape == (SIZE, SIZE, 3)
    assert skipped == ["train/cat/998.jpg"]  # the sample (every training file here) met it


def test_undecodable_training_images_are_named_by_the_stream(folder, stream_ids, tmp_path, monkeypatch):
    """The shuffled, endless training stream names the file it could not decode, or skips and records it."""
    from cnnjax.data import stream_sources

    monkeypatch.setattr(stream_sources, "_CHANNEL_PROBE", 1)  # so the stream, not the probe, meets the files
    root = tmp_path / "images"
    shutil.copytree(folder[0], root)
    broken = {"train/cat/998.jpg": b"\xff\xd8\xff not really a jpeg", "train/owl/997.png": b"not a png"}
    for name, data in broken.items():
        (root / name).write_bytes(data)
    config = _config(name="image_folder", path=str(root), train_split=None, validation_split=None, test_split=None,
                     validation_fraction=0.0)
    stream = streaming.train_stream(config, global_batch_size=6, seed=0, process_index=0, process_count=1)
    with pytest.raises(DataError, match=r"^Cannot decode image 'train/(cat/998.jpg|owl/997.png)' in "):
        _take(stream, 4)  # 3 batches hold 18 of the 20 files of the first epoch
    config.bad_images = "skip"
    skipped: list[str] = []
    stream = streaming.train_stream(config, global_batch_size=6, seed=0, process_index=0, process_count=1,
                                    skipped=skipped)
    batches = _take(stream, 10)  # three epochs of 18 good images each
    assert sorted(skipped) == sorted(broken)
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), _label_of(images))
    ids = stream_ids(images).tolist()
    good_train = set(range(len(FOLDER_CLASSES) * FOLDER_TRAIN_PER_CLASS))
    assert set(ids[:18]) == good_train and set(ids[18:36]) == good_train  # each epoch: every good file once


def test_gaps_in_the_positions_name_the_skipped_files_once_each():
    """`stream_checks.checked` on hand-made batches: the missing positions, between batches and after the
    last, are the dropped files; a file dropped again is recorded once; a nameless record is not recorded."""
    import types

    from cnnjax.data import stream_checks

    batches = [{"image": np.arange(3), "position": np.array([0, 2, 3])}, {"image": np.arange(1), "position": np.array([6])}]
    source = types.SimpleNamespace(name="image_folder", root="/data")
    config = _config(bad_images="skip")
    skipped: list[str] = []
    out = list(stream_checks.checked(iter([dict(b) for b in batches]), source, "test", config,
                                     lambda position: f"f{position % 4}", 3, total=9, skipped=skipped))
    assert [sorted(b) for b in out] == [["image"], ["image"]]  # the positions are taken out
    assert skipped == ["f1", "f0", "f3"]  # positions 1, 4, 5, 7, 8: f1, f0, f1 again, f3, f0 again
    skipped = []
    list(stream_checks.checked(iter([dict(b) for b in batches]), source, "test", config, lambda position: None, 3,
                               total=9, skipped=skipped))
    assert skipped == []


def test_random_resized_crop_varies_and_flips():
    import tensorflow as tf

    # A left-to-right ramp: a flipped view decreases along the width.
    ramp = np.broadcast_to(np.linspace(0, 250, 48, dtype=np.uint8)[None, :, None], (40, 48, 3)).copy()
    encoded = tf.constant(tf.io.encode_png(ramp).numpy())
    views = {}
    for flip in (False, True):
        views[flip] = [
            host_augment.random_resized_crop(
                encoded, tf.constant([5, i], tf.int64), size=SIZE, channels=3, flip=flip
            ).numpy()
            for i in range(12)
        ]
    slopes = {flip: [int(v[:, -1, 0].mean()) - int(v[:, 0, 0].mean()) for v in vs] for flip, vs in views.items()}
    assert all(s > 0 for s in slopes[False])
    assert any(s < 0 for s in slopes[True]) and any(s > 0 for s in slopes[True])
    assert len({v.tobytes() for v in views[False]}) > 6  # Crops differ between seeds.
    center = host_augment.center_crop(encoded, size=SIZE, channels=1).numpy()
    assert center.shape == (SIZE, SIZE, 1) and center.dtype == np.uint8


def test_prefetch_to_device_keeps_order():
    batches = [{"image": np.full((2, 3), i, np.uint8), "label": np.array([i, i], np.int32)} for i in range(5)]
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    for shard in (None, sharding):
        pulled = []
        source = (pulled.append(i) or batch for i, batch in enumerate(batches))
        stream = streaming.prefetch_to_device(source, 3, shard)
        first = next(stream)
        assert len(pulled) == 3  # Three batches sent ahead before the first is used.
        out = [first, *stream]
        assert [int(b["label"][0]) for b in out] == list(range(5))
        assert all(isinstance(b["image"], jax.Array) and b["image"].dtype == np.uint8 for b in out)
        if shard is not None:
            assert all(b["image"].sharding == sharding for b in out)
    with pytest.raises(ValueError, match="prefetch size"):
        next(streaming.prefetch_to_device(iter(batches), 0))


def test_bad_input_is_explained(tfds_config, stream_tfds, tmp_path):
    with pytest.raises(ValueError, match="Unknown split 'valid'; valid choices: train, validation, test"):
        next(streaming.eval_stream(tfds_config, "valid", global_batch_size=4, process_index=0, process_count=1))
    with pytest.raises(ValueError, match="data.image_size must be an integer >= 1, got 0"):
        streaming.streaming_info(_config(data_dir=stream_tfds.data_dir, image_size=0))
    with pytest.raises(ValueError, match=r"no image feature 'values' .*features: label, values"):
        streaming.streaming_info(_config(name="stream_no_image", data_dir=stream_tfds.data_dir))
    with pytest.raises(DataError, match="does not exist.*root/<split>/<class>/<image>"):
        streaming.streaming_info(_config(name="image_folder", path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="valid choices: none, channel_mean, standardize"):
        streaming.streaming_info(_config(data_dir=stream_tfds.data_dir, preprocess="mean_image"))
    with pytest.raises(ValueError, match="multiple of process_count=3"):
        streaming.train_stream(tfds_config, global_batch_size=8, seed=0, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="split string"):
        streaming.streaming_info(_config(data_dir=stream_tfds.data_dir, max_train_examples=10))


def test_ordered_grayscale_png_set(fake_mnist):
    # fake mnist: PNG, one channel, written in a fixed order (no file shuffling allowed).
    config = _config(name="mnist", data_dir=fake_mnist.data_dir, image_size=28, train_split="train", preprocess="none")
    info = streaming.streaming_info(config)
    assert info.image_shape == (28, 28, 1) and info.num_classes == 10
    batch = next(streaming.train_stream(config, global_batch_size=8, seed=0, process_index=0, process_count=1))
    assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype == np.uint8
    test = list(streaming.eval_stream(config, "test", global_batch_size=4, process_index=0, process_count=1))
    labels = np.concatenate([b["label"] for b in test])[np.concatenate([b["mask"] for b in test]) == 1]
    np.testing.assert_array_equal(labels, np.arange(100, 100 + fake_mnist.num_test) % 10)  # Source order.
