"""A run with EMA and profiling on: its summary, --mode=eval and the trace agree."""

from __future__ import annotations

import glob
import os

import pytest

from cnnjax.inference.evaluate import evaluate_run
from cnnjax.inference.run_config import read_run_config
from tests.inference.conftest import load_config


@pytest.mark.slow
def test_ema_run_is_evaluated_with_its_average_and_profiled(tmp_path):
    from cnnjax.training.train import train_and_evaluate

    config = load_config()
    config.data.data_dir = str(tmp_path / "tfds")
    config.progress_bar = False
    config.optimizer.ema_decay = 0.9
    config.profile_steps = "2,3"
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)
    record = evaluate_run(workdir, read_run_config(workdir))
    assert record["ema_weights"] is True
    assert record["accuracy"] == pytest.approx(summary["eval/accuracy"], abs=1e-9)
    assert glob.glob(os.path.join(workdir, "plugins", "profile", "*", "*.xplane.pb"))
