"""`--mode=babysit` on the command line: bad input fails before the workdir is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "cnnjax.main", f"--config={DEFAULT}", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_bad_mode_and_bad_thresholds_fail_before_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = _run(f"--workdir={workdir}", "--mode=babysitt")
    assert result.returncode != 0 and "babysit" in result.stderr
    result = _run(f"--workdir={workdir}", "--mode=babysit", "--config.monitor.gap=1.5",
                  "--config.babysit.lr_min=10.0")
    assert result.returncode == 2, result.stderr
    assert "monitor.gap must be in (0, 1)" in result.stderr and "babysit.lr_min/lr_max" in result.stderr
    assert not workdir.exists()
