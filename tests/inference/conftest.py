"""One small trained run (LeNet-5 on mnist5k, one epoch) shared by the inference tests."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_config(arg="smoke"):
    spec = importlib.util.spec_from_file_location("cfg_default", ROOT / "experiments" / "configs" / "default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def cli(*args):
    return [sys.executable, "-m", "cnnjax.main", *args]


def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(workdir, summary, config) of a finished run; tests that change it copy it first."""
    from cnnjax.training.train import train_and_evaluate

    config = load_config()
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.progress_bar = False
    config.tensorboard = False
    workdir = str(tmp_path_factory.mktemp("runs") / "lenet")
    summary = train_and_evaluate(config, workdir)
    return workdir, summary, config


@pytest.fixture()
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run's workdir."""
    workdir = str(tmp_path / "run")
    shutil.copytree(trained_run[0], workdir)
    return workdir


def snapshot(workdir):
    """{relative path: (size, mtime_ns)} of every file under `workdir`."""
    out = {}
    for dirpath, _, files in os.walk(workdir):
        for name in files:
            path = os.path.join(dirpath, name)
            stat = os.stat(path)
            out[os.path.relpath(path, workdir)] = (stat.st_size, stat.st_mtime_ns)
    return out
