"""End to end: outputs, resume == uninterrupted, workdir refusal, non-finite stop."""

import glob
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

from cnnjax.training.train import NonFiniteLossError, WorkdirConfigMismatchError, train_and_evaluate
from experiments import common

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def smoke(data_dir, load_config):
    from cnnjax.data import load_dataset

    config = load_config("default", "smoke")
    config.data.data_dir = data_dir
    config.num_epochs = 2
    config.checkpoint_every_steps = 5
    config.progress_bar = False
    return config, load_dataset(config.data)


def _params(workdir, config, dataset, restore_checkpoint):
    """Final params of the run in `workdir`, read back from its last checkpoint."""
    from cnnjax.training.optim import optimizer_from_config
    from cnnjax.training.state import create_train_state
    from cnnjax.training.train import build_model

    model = build_model(config, dataset.num_classes)
    tx = optimizer_from_config(config, 8, 16)
    state = create_train_state(model, tx, jax.random.PRNGKey(0), dataset.image_shape)
    return restore_checkpoint(workdir, state)


def test_run_writes_pinned_outputs(smoke, tmp_path):
    config, dataset = smoke
    summary = train_and_evaluate(config, str(tmp_path), dataset=dataset)
    for key in ("eval/accuracy", "eval/loss", "train/loss", "steps", "num_params", "wall_time_s", "val/accuracy"):
        assert key in summary
    assert summary["steps"] == 16 and summary["num_params"] == 61706
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["eval/accuracy"] == summary["eval/accuracy"]
    assert json.loads((tmp_path / "config.json").read_text())["model"]["name"] == "lenet5"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r for r in records)
    assert any("train/loss" in r for r in records) and any("val/accuracy" in r for r in records)
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert os.listdir(tmp_path / "checkpoints")


def test_resume_equals_uninterrupted_bitwise(smoke, tmp_path, capsys, assert_trees_equal, restore_checkpoint):
    config, dataset = smoke
    full = train_and_evaluate(config, str(tmp_path / "full"), dataset=dataset)
    part = train_and_evaluate(config, str(tmp_path / "split"), dataset=dataset, stop_after_steps=7)
    assert part["status"] == "interrupted" and part["steps"] == 7
    assert not (tmp_path / "split" / "summary.json").exists()
    # Checkpoint 7 damaged after it was written: the resume falls back to checkpoint 5 and says so.
    for path in glob.glob(str(tmp_path / "split" / "checkpoints" / "7" / "**"), recursive=True):
        if os.path.isfile(path) and os.path.getsize(path) and "_CHECKPOINT_METADATA" not in path:
            Path(path).write_bytes(b"not a checkpoint")
    capsys.readouterr()
    resumed = train_and_evaluate(config, str(tmp_path / "split"), dataset=dataset)
    out = capsys.readouterr().out
    assert "Checkpoint 7 in" in out and "is unreadable" in out and "Resuming from step 5 of 16" in out
    assert resumed["steps"] == 16
    a = _params(tmp_path / "full", config, dataset, restore_checkpoint)
    b = _params(tmp_path / "split", config, dataset, restore_checkpoint)
    assert_trees_equal(a, b)
    assert full["eval/accuracy"] == resumed["eval/accuracy"]
    assert full["eval/loss"] == resumed["eval/loss"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [s for s, line in zip(steps, (tmp_path / "split" / "metrics.jsonl").read_text().splitlines())
                   if "train/loss" in line]
    assert len(train_steps) == len(set(train_steps)), "resumed steps must not be logged twice"


def test_workdir_with_other_config_is_refused_untouched(smoke, tmp_path):
    config, dataset = smoke
    train_and_evaluate(config, str(tmp_path), dataset=dataset, stop_after_steps=3)
    before = {p: p.read_bytes() for p in tmp_path.glob("*.json*")}
    changed = config.copy_and_resolve_references()
    changed.optimizer.learning_rate = 0.5
    with pytest.raises(WorkdirConfigMismatchError, match=r"optimizer.learning_rate: 0.05 -> 0.5"):
        train_and_evaluate(changed, str(tmp_path), dataset=dataset)
    assert before == {p: p.read_bytes() for p in tmp_path.glob("*.json*")}
    summary = train_and_evaluate(changed, str(tmp_path), dataset=dataset, allow_config_change=True)
    assert summary["status"] == "completed"


def test_nonfinite_loss_stops_with_step_and_keeps_last_good_checkpoint(smoke, tmp_path):
    config, dataset = smoke
    bad = config.copy_and_resolve_references()
    bad.optimizer.name = "sgd"
    bad.optimizer.momentum = None
    bad.schedule.name = "constant"
    bad.schedule.warmup_epochs = 0.0
    bad.optimizer.learning_rate = 1e8
    bad.checkpoint_every_steps = 1
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at step (\d+)") as info:
        train_and_evaluate(bad, str(tmp_path), dataset=dataset)
    message = str(info.value)
    assert "Last finite metrics" in message and "learning_rate" in message
    bad_step = int(message.split("at step ")[1].split()[0])
    kept = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert kept and max(kept) == bad_step - 1
    assert not (tmp_path / "summary.json").exists()


CIFAR_JPG = common.CIFAR_ARCHIVE


@pytest.mark.needs_cifar10
def test_trains_a_few_steps_on_the_cifar10_image_folder(tmp_path, load_config):
    config = load_config("image_folder")
    config.data.path = str(CIFAR_JPG)
    config.data.max_train_examples = 256
    config.data.max_eval_examples = 64
    config.model.name = "lenet5"
    config.num_epochs = 1
    config.batch_size = 32
    config.progress_bar = False
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["steps"] == 8 and summary["dataset"] == "image_folder"
    assert np.isfinite(summary["train/loss"])
    # Evaluated on the 64 test images: a whole number of them right.
    assert abs(summary["eval/accuracy"] * 64 - round(summary["eval/accuracy"] * 64)) < 1e-3


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory, write_two_class_jpegs):
    return write_two_class_jpegs(tmp_path_factory.mktemp("folder"))


def test_streaming_run_trains_evaluates_and_resumes(jpeg_folder, tmp_path):
    from cnnjax.config import base_config

    config = base_config()
    config.data.name = "image_folder"
    config.data.path = jpeg_folder
    config.data.streaming = True
    config.data.image_size = 32
    config.data.augment.flip = True
    config.model.name = "lenet5"
    config.batch_size, config.num_epochs, config.eval_batch_size = 8, 3, 16
    config.optimizer.name, config.optimizer.momentum, config.optimizer.learning_rate = "momentum", 0.9, 0.02
    config.progress_bar, config.tensorboard, config.log_every_steps = False, False, 2

    stopped = train_and_evaluate(config, str(tmp_path), stop_after_steps=5)
    assert stopped["status"] == "interrupted" and stopped["steps"] == 5
    summary = train_and_evaluate(config, str(tmp_path))
    # 64 training images, 10% carved off for validation: 56 -> 7 steps per epoch.
    assert summary["status"] == "completed" and summary["steps"] == 21
    assert summary["dataset"] == "image_folder"
    assert summary["val/accuracy"] >= 0.8 and summary["eval/accuracy"] >= 0.8
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl") if "train/loss" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 21
