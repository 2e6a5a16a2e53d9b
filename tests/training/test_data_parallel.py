"""Data parallelism over a `data` mesh and across processes equals one device.

Each test runs in subprocesses: the device count of a JAX process is fixed when
its backend starts (8 host CPU devices here; two processes over loopback for the
multi-process case, with gloo collectives).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(Path(__file__).with_name("data_parallel_worker.py"))
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _worker(*args) -> dict:
    result = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True, env=_env(),
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_eight_device_step_equals_one_device_step_with_synchronised_batch_norm():
    result = _worker("step")
    assert result["devices"] == 8 and result["param_devices"] == 8
    assert result["all_reduces"] > 0, "the step must be partitioned over the devices"
    assert result["param_diff"] < 1e-5
    assert result["stats_diff"] < 1e-5
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-6)
    # Per-device statistics (unsynchronised BN) would be far off: the check can tell.
    assert result["local_stats_diff"] > 1e-2


@pytest.mark.slow  # the loop on a mesh is also covered by the two-process test below
def test_training_run_on_eight_devices_equals_one_device(tmp_path):
    result = _worker("run", str(tmp_path / "tfds"), str(tmp_path))
    one, eight = result["1"], result["8"]
    for key in ("train/loss", "train/grad_norm", "train/param_norm", "val/loss", "eval/loss"):
        assert eight[key] == pytest.approx(one[key], rel=1e-5), key
    assert eight["eval/accuracy"] == one["eval/accuracy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_over_loopback_equal_one_process(tmp_path):
    common = [f"--config={DEFAULT}:smoke", f"--config.data.data_dir={tmp_path / 'tfds'}",
              "--config.progress_bar=False", "--config.tensorboard=False"]
    cli = [sys.executable, "-m", "cnnjax.main"]
    # The single-process run first: it also prepares the data set both processes then read.
    single = subprocess.run([*cli, *common, f"--workdir={tmp_path / 'one'}"], capture_output=True, text=True,
                            env=_env(), timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]

    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen([*cli, *common, "--config.mesh.data=0", f"--workdir={tmp_path / 'two'}",
                          f"--coordinator_address={address}", "--num_processes=2", f"--process_id={rank}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
        assert "Summary:" in output
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["steps"] == one["steps"] == 8
    for key in ("train/loss", "train/param_norm", "val/loss", "eval/loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert two["eval/accuracy"] == one["eval/accuracy"]
    # Both processes wrote one checkpoint together; only process 0 wrote the logs.
    assert os.listdir(tmp_path / "two" / "checkpoints") == ["8"]


def test_incomplete_coordinator_flags_are_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnjax.main", f"--config={DEFAULT}:smoke",
                             f"--workdir={tmp_path / 'w'}", "--coordinator_address=localhost:1234"],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode != 0
    assert "--coordinator_address, --num_processes and --process_id go together" in result.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_two_process_streaming_run_reads_per_process_shares(tmp_path, write_two_class_jpegs):
    """Each process streams its own half of the files; together they train one model."""
    write_two_class_jpegs(tmp_path / "folder")
    port = str(_free_port())
    worker = str(Path(__file__).with_name("multihost_stream_worker.py"))
    procs = [subprocess.Popen([sys.executable, worker, str(rank), port, str(tmp_path / "folder"),
                               str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=_env())
             for rank in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    results = []
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
        results.append(json.loads([ln for ln in output.splitlines() if ln.startswith("RESULT ")][-1][7:]))
    assert results[0]["devices"] == 2
    assert results[0]["steps"] == results[1]["steps"] == 14  # 56 training images, batch 8, 2 epochs
    assert results[0]["eval/loss"] == results[1]["eval/loss"], "both processes hold the same replicated model"
    assert results[0]["eval/accuracy"] >= 0.8
