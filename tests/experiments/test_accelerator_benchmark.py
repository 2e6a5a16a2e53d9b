"""The one-command accelerator benchmark: `--smoke` runs end to end without TensorFlow and writes finite figures."""

import json
import math
import os
import subprocess
import sys

import pytest

from experiments import common

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SCRIPT = os.path.join(ROOT, "experiments", "benchmarks", "accelerator.py")
# Runs the script as `python accelerator.py ...` would, with TensorFlow made unimportable.
WITHOUT_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.slow
@pytest.mark.skipif(not common.CIFAR_ARCHIVE.exists(), reason="the speed run needs the CIFAR-10 JPEG archive")
def test_smoke_runs_without_tensorflow_and_writes_a_finite_figure_per_row(tmp_path):
    out = tmp_path / "accelerator.json"
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT))
    done = subprocess.run([sys.executable, "-c", WITHOUT_TF, SCRIPT, "--smoke", f"--out={out}"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert {row["figure"] for row in rows} == {"population", "train_step", "speedrun"}
    plans = {row["setting"].split()[1] for row in rows if row["figure"] == "population"}
    assert plans == {"vmap", "sequential", "auto"}  # chunked needs P > 4
    for row in rows:
        assert {"figure", "model", "setting", "value", "unit", "reference", "ratio", "error", "device"} <= set(row)
        assert row["error"] is None, row
        assert isinstance(row["value"], float) and math.isfinite(row["value"]) and row["value"] > 0, row
        if row["figure"] == "population":
            assert math.isclose(row["ratio"], row["value"] / row["reference"], rel_tol=1e-9)
    assert "not measured" not in done.stdout


def test_unknown_part_exits_2_naming_the_valid_ones():
    done = subprocess.run([sys.executable, SCRIPT, "--parts=population,gpu"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)), timeout=300)
    assert done.returncode == 2
    assert "--parts: unknown gpu; valid: train_step, speedrun, population" in done.stderr
