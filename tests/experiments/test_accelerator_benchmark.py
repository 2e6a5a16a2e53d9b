"""The one-command accelerator benchmark: `--smoke` runs end to end without TensorFlow and writes finite figures."""

import json
import math
import os
import subprocess
import sys

from experiments import common

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(ROOT, "experiments", "benchmarks", "accelerator.py")
# Runs the script as `python accelerator.py ...` would, with TensorFlow made unimportable.
WITHOUT_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_smoke_runs_without_tensorflow_and_writes_consistent_finite_rows(tmp_path):
    """The whole `--smoke` command (every part; the speed run only where the archive is) in a fresh process."""
    out = tmp_path / "accelerator.json"
    parts = "train_step,speedrun,population" if common.CIFAR_ARCHIVE.exists() else "train_step,population"
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    done = subprocess.run([sys.executable, "-c", WITHOUT_TF, SCRIPT, "--smoke", f"--parts={parts}", f"--out={out}"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert {row["figure"] for row in rows} == set(parts.split(","))
    population = [row for row in rows if row["figure"] == "population"]
    assert {row["setting"].split()[1] for row in population} == {"vmap", "chunked(1)", "sequential", "auto"}
    for row in rows:
        assert {"figure", "model", "setting", "value", "unit", "reference", "ratio", "error", "device"} <= set(row)
        assert row["error"] is None, row
        assert _finite(row["value"]), row
        if row["figure"] == "population":  # rates: the plan's over the sequential one
            assert _finite(row["reference"]) and math.isclose(row["ratio"], row["value"] / row["reference"],
                                                              rel_tol=1e-9), row
        elif row["figure"] == "train_step" and row["reference"] is not None:  # times: PyTorch's over ours
            assert _finite(row["reference"]) and math.isclose(row["ratio"], row["reference"] / row["value"],
                                                              rel_tol=1e-9), row
    # Every population row compares against the same sequential figure, measured once.
    assert len({row["reference"] for row in population}) == 1
    assert "not measured" not in done.stdout
    printed = done.stdout.split("all figures:")[1]
    for row in rows:
        assert f"{row['value']:.4g} {row['unit']}" in printed, row


def test_unknown_part_exits_2_naming_the_valid_ones():
    done = subprocess.run([sys.executable, SCRIPT, "--parts=population,gpu"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)), timeout=300)
    assert done.returncode == 2
    assert "--parts: unknown gpu; valid: train_step, speedrun, population" in done.stderr
