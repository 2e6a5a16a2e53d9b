"""Crash-safe outputs: whole files replaced atomically, a torn metrics line dropped on read and resume."""

import json
import os

import pytest

from cnnjax.training.files import atomic_write
from cnnjax.training.writers import MetricWriter, read_metrics, truncate_metrics, write_json

TORN = '{"step": 12, "train/lo'


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "summary.json"
    write_json(str(path), {"a": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(str(path)) as f:
            f.write('{"a": 2, "b"')  # half a new version ...
            raise RuntimeError("killed")  # ... then the writer dies
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["summary.json"], "no temporary file is left behind"
    write_json(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}


def test_atomic_write_gives_a_new_file_the_umask_mode_and_keeps_an_old_files_mode(tmp_path):
    previous = os.umask(0o027)
    try:
        write_json(str(tmp_path / "new.json"), {"a": 1})
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
        os.chmod(tmp_path / "new.json", 0o604)
        write_json(str(tmp_path / "new.json"), {"a": 2})
        assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(previous)


def test_read_metrics_drops_a_torn_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 4, "train/loss": 2.0}\n{"step": 8, "train/loss": 1.5}\n' + TORN)
    assert read_metrics(str(tmp_path)) == [{"step": 4, "train/loss": 2.0}, {"step": 8, "train/loss": 1.5}]
    assert read_metrics(str(tmp_path / "metrics.jsonl")) == read_metrics(str(tmp_path))
    assert read_metrics(str(tmp_path / "absent")) == []


def test_writer_cuts_a_torn_line_before_appending(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 4, "train/loss": 2.0}\n' + TORN)
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    writer.write(12, {"train/loss": 1.25})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 4, "train/loss": 2.0}, {"step": 12, "train/loss": 1.25}]


def test_truncate_metrics_survives_a_torn_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 4, "train/loss": 2.0}\n{"step": 8, "train/loss": 1.5}\n{"step": 8, "eval/accuracy": 0.5}\n'
        '{"step": 12, "train/loss": 1.0}\n' + TORN)
    truncate_metrics(str(tmp_path), after_step=8)
    # The final evaluation's record goes too: the resumed run evaluates again.
    assert read_metrics(str(tmp_path)) == [{"step": 4, "train/loss": 2.0}, {"step": 8, "train/loss": 1.5}]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")


def _events(path):
    """(tag, step) of every scalar in a TensorBoard event file, read strictly (a torn record raises)."""
    import tensorflow as tf
    from tensorboardX.proto import event_pb2

    out = []
    for record in tf.data.TFRecordDataset(str(path)):
        event = event_pb2.Event.FromString(record.numpy())
        out += [(value.tag, event.step) for value in event.summary.value]
    return out


def test_run_with_a_torn_metrics_line_and_event_record_resumes(load_config, tmp_path):
    """(That a resumed run equals an uninterrupted one is tests/training/test_train.py's and faults.py's.)"""
    import tensorflow as tf

    from cnnjax.data import load_dataset
    from cnnjax.training.train import train_and_evaluate

    config = load_config("default", "smoke")
    config.data.data_dir = str(tmp_path / "tfds")
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.progress_bar = False
    config.tensorboard = True
    dataset = load_dataset(config.data)

    workdir = tmp_path / "killed"
    train_and_evaluate(config, str(workdir), dataset=dataset, stop_after_steps=4)
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write(TORN)  # what a SIGKILL in the middle of a metrics write leaves
    (events,) = workdir.glob("events.out.tfevents.*")
    whole = events.read_bytes()
    # A record cut short: its 8-byte length (100 bytes of data), 4-byte CRC, and 10 of the 100 bytes.
    events.write_bytes(whole + (100).to_bytes(8, "little") + b"\0" * 4 + b"x" * 10)
    with pytest.raises(tf.errors.DataLossError):
        _events(events)
    resumed = train_and_evaluate(config, str(workdir), dataset=dataset)
    assert resumed["status"] == "completed" and resumed["steps"] == 8
    steps = [r["step"] for r in read_metrics(str(workdir)) if "train/loss" in r]
    assert steps == list(range(1, 9)), "every step logged once, none torn"
    assert events.read_bytes() == whole, "the torn record is cut, the complete ones kept"
    # The resumed run writes its own event file; together they hold every step once.
    tb_steps = sorted(s for path in workdir.glob("events.out.tfevents.*") for tag, s in _events(path)
                      if tag == "train/loss")
    assert tb_steps == list(range(1, 9))
    # Run again once finished: the final evaluation is logged again, and only once.
    train_and_evaluate(config, str(workdir), dataset=dataset)
    finals = [r for r in read_metrics(str(workdir)) if "eval/accuracy" in r]
    assert len(finals) == 1 and finals[0]["step"] == 8
    assert (workdir / "metrics.jsonl").read_text().endswith("\n")


def test_torn_event_records_are_found_by_their_framing(tmp_path):
    from tensorboardX import SummaryWriter

    from cnnjax.training.writers import drop_torn_event_records

    writer = SummaryWriter(logdir=str(tmp_path))
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    whole = events.read_bytes()
    assert drop_torn_event_records(str(tmp_path)) == [] and events.read_bytes() == whole
    kept = set()
    for cut in (1, 4, 5, 20, 38, 44):  # the last record (~48 bytes) cut in its data CRC, data, header CRC, length
        events.write_bytes(whole[:-cut])
        assert drop_torn_event_records(str(tmp_path)) == [str(events)]
        kept.add(events.read_bytes())
    assert len(kept) == 1, "every cut inside the last record leaves the same complete records"
    assert whole.startswith(kept.pop())
    assert [step for tag, step in _events(events) if tag == "train/loss"] == [0, 1]
