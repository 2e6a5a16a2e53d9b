"""A sweep over several processes (`jax.distributed` on loopback) equals the same sweep in one process.

Two CLI processes with 2 host CPU devices each spread 4 members over the 4
devices (collectives over gloo); the reference is one process with 4 devices.
The sweep is successive halving (rungs of 4, 2 and 1 members: the smaller rungs
run padded to the 4 devices), so it also crosses phase boundaries.
Each process runs under `audited_cli.py`, which lists what it writes from Python
in the workdir, so the tests can tell that process 1 leaves every file but the
checkpoints (written by orbax with all processes) to process 0.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUDITED = str(Path(__file__).with_name("audited_cli.py"))
# Every run checkpoints every 3 steps and logs every step, so that train-loss windows match (and
# processes compare notes on signals at every step).
COMMON = ("--mode=sweep", "--config.progress_bar=False", "--config.sweep.mesh_devices=0",
          "--config.checkpoint_every_steps=3", "--config.keep_checkpoints=100", "--config.log_every_steps=1",
          "--config.sweep.strategy=successive_halving", "--config.num_epochs=2", "--config.sweep.min_epochs=0.5",
          "--config.sweep.eta=2")
# Orbax steps are 1000 * sweep step + phase: rung 1 (4 members) ends at sweep step 4, rung 2 (2) at 8,
# rung 3 (1 member) at 16.


def _env(devices: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _args(workdir, data_dir, *extra) -> list[str]:
    return [f"--config={ROOT / 'experiments' / 'configs' / 'sweep_lr_wd.py'}:smoke", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", *COMMON, *extra]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(workdir: Path, data_dir: str, *extra: str, signal_at=None, tag: str = "run"):
    """Runs the sweep as 2 processes; `signal_at=(checkpoint, signal, ranks)` signals those processes
    once that checkpoint exists.

    Returns (return codes, outputs, the workdir paths each process wrote).
    """
    address = f"localhost:{_free_port()}"
    records = [workdir.parent / f"{tag}-writes-{rank}.txt" for rank in (0, 1)]
    procs = [
        subprocess.Popen([sys.executable, AUDITED, str(workdir), str(records[rank]),
                          *_args(workdir, data_dir, *extra), f"--coordinator_address={address}",
                          "--num_processes=2", f"--process_id={rank}"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(2))
        for rank in (0, 1)
    ]
    if signal_at is not None:
        checkpoint, sig, ranks = signal_at
        deadline = time.time() + 600
        while not (workdir / "checkpoints" / checkpoint).is_dir() and time.time() < deadline:
            assert all(p.poll() is None for p in procs), "a process ended before the checkpoint to signal at"
            time.sleep(0.01)
        for rank in ranks:
            procs[rank].send_signal(sig)
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    writes = [r.read_text().split() if r.exists() else None for r in records]
    return [p.returncode for p in procs], outputs, writes


def _members(workdir: Path) -> dict[int, dict]:
    return {row["member"]: row for row in json.loads((workdir / "results.json").read_text())["members"]}


def _assert_same_members(one: Path, two: Path) -> None:
    """Same members and values; val accuracy within 0.004 (one example of 100 is 0.01); train loss to 1e-5."""
    a, b = _members(one), _members(two)
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    for member, row in a.items():
        other = b[member]
        for key in ("optimizer.learning_rate", "optimizer.weight_decay", "seed", "steps", "diverged",
                    "stopped_at_epoch"):
            assert other.get(key) == row.get(key), (member, key)
        for key in ("best_val_accuracy", "final_val_accuracy"):
            assert abs(other[key] - row[key]) <= 0.004, (member, key, row[key], other[key])
        assert other["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5), member
    assert len((two / "metrics.jsonl").read_text().splitlines()) == len((one / "metrics.jsonl").read_text().splitlines())


def _outside_checkpoints(paths: list[str]) -> list[str]:
    return [p for p in paths if "checkpoints" not in Path(p).parts]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The sweep in one process with 4 host CPU devices."""
    data_dir, _ = data
    workdir = tmp_path_factory.mktemp("one") / "sweep"
    result = subprocess.run([sys.executable, "-m", "cnnjax.main", *_args(workdir, data_dir)],
                            capture_output=True, text=True, env=_env(4), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return workdir


def test_a_multi_process_sweep_must_use_every_device(tmp_path):
    """sweep.mesh_devices other than 0 under two processes: exit 2 in both, before data or writes."""
    workdir = tmp_path / "sweep"
    codes, outputs, writes = _two_processes(workdir, str(tmp_path / "tfds"), "--config.sweep.mesh_devices=2")
    for code, output in zip(codes, outputs):
        assert code == 2, output[-3000:]
        assert ("sweep.mesh_devices=2 with 2 processes (4 devices in all): a multi-process sweep spreads its "
                "members over every device; use sweep.mesh_devices=0") in output
        assert "Traceback" not in output
    assert not workdir.exists() and not (tmp_path / "tfds").exists()
    assert writes == [[], []]


@pytest.mark.slow
def test_two_processes_equal_one_process_and_only_process_0_writes(reference, data, tmp_path):
    data_dir, _ = data
    workdir = tmp_path / "sweep"
    codes, outputs, writes = _two_processes(workdir, data_dir)
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
        assert "Sweep: 4 members, 0 diverged" in output
    _assert_same_members(reference, workdir)
    assert [m["steps"] for m in _members(workdir).values()] == [16, 8, 4, 4]  # every rung ran
    # Process 0 wrote the outputs (the audit sees them); process 1 nothing but checkpoint files.
    primary = set(_outside_checkpoints(writes[0]))
    assert {"metrics.jsonl", "results.csv", "results.json", "summary.json", "config.json", "study.db",
            "best/0/config.json", "best/0/summary.json"} <= primary, sorted(primary)
    assert _outside_checkpoints(writes[1]) == []
    assert sorted(os.listdir(workdir)) == sorted(os.listdir(reference))
    # The best member's run workdir: the same test accuracy as in one process.
    one, two = (json.loads((w / "best" / "0" / "summary.json").read_text()) for w in (reference, workdir))
    assert two["eval/accuracy"] == one["eval/accuracy"] and two["steps"] == one["steps"]


@pytest.mark.slow
def test_stopped_and_killed_two_process_sweep_resumes_to_the_one_process_result(reference, data, tmp_path):
    data_dir, _ = data
    workdir = tmp_path / "sweep"
    # SIGTERM to process 1 only: both processes stop at the same step, checkpoint and exit 0.
    codes, outputs, _ = _two_processes(workdir, data_dir, signal_at=("3000", signal.SIGTERM, [1]), tag="stopped")
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
        assert "Sweep stopped at " in output and "Run the same command again to resume." in output
    assert not (workdir / "results.json").exists()
    # Resumed, then SIGKILLed (both) in the last rung, after its first checkpoint.
    codes, outputs, _ = _two_processes(workdir, data_dir, signal_at=("9002", signal.SIGKILL, [0, 1]), tag="killed")
    assert codes == [-signal.SIGKILL] * 2, [o[-2000:] for o in outputs]
    assert all("Resuming the sweep at phase 0 (rung 1 " in o or "Resuming the sweep at phase 1 " in o
               for o in outputs), [o[-2000:] for o in outputs]
    codes, outputs, writes = _two_processes(workdir, data_dir, tag="resumed")
    for code, output in zip(codes, outputs):
        assert code == 0, output[-3000:]
        assert "Resuming the sweep at phase 2 (rung 3 (1 member to 2 epochs)), step 9" in output
    _assert_same_members(reference, workdir)
    assert _outside_checkpoints(writes[1]) == []
