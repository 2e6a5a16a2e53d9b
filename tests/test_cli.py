"""The command line in a subprocess: bad configs fail early; SIGTERM checkpoints and resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "experiments" / "configs" / "default.py")


def _cli(*args):
    return [sys.executable, "-m", "cnnjax.main", *args]


def test_bad_config_fails_before_touching_the_workdir(tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    result = subprocess.run(
        _cli(f"--config={DEFAULT}", f"--workdir={workdir}", "--config.model.name=resnet9000",
             "--config.optimizer.learning_rate=-1"),
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert result.returncode == 2
    assert "model.name='resnet9000' is not a model; valid choices:" in result.stderr
    assert "optimizer.learning_rate must be > 0" in result.stderr
    assert not workdir.exists()


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, subprocess_env):
    workdir = tmp_path / "run"
    args = _cli(f"--config={DEFAULT}", f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'tfds'}",
                "--config.log_every_steps=5", "--config.num_epochs=4")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and "train/loss" in metrics.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stdout.read()
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    # Bounded: the loop finishes its step, saves and exits (a preemption notice gives ~30 s).
    assert time.time() - signalled < 30, "the checkpoint after SIGTERM took too long"
    assert proc.returncode == 0, output
    assert "Stopped at step" in output and "SIGTERM" in output
    stopped_at = int(output.split("Stopped at step ")[1].split()[0])
    assert stopped_at < 248
    assert str(stopped_at) in os.listdir(workdir / "checkpoints")
    assert not (workdir / "summary.json").exists()

    rerun = subprocess.run(args, capture_output=True, text=True, env=subprocess_env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["steps"] == 4 * (4000 // 64)
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()
             if "train/loss" in line]
    assert steps == sorted(set(steps)), "no step is logged twice after the resume"


@pytest.mark.slow
def test_default_job_reaches_target_accuracy(tmp_path, subprocess_env):
    """The README's first command: >= 0.97 test accuracy on mnist5k."""
    result = subprocess.run(
        _cli(f"--config={DEFAULT}", f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'tfds'}"),
        capture_output=True, text=True, env=subprocess_env, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval/accuracy"] >= 0.97


def test_resuming_a_different_sweep_exits_2_and_writes_nothing(tmp_path, subprocess_env):
    import importlib.util

    from cnnjax.tuning.sweep import run_sweep

    config_path = ROOT / "experiments" / "configs" / "sweep_lr_wd.py"
    spec = importlib.util.spec_from_file_location("cfg_sweep_cli", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.data.data_dir = str(tmp_path / "tfds")
    config.progress_bar = False
    config.checkpoint_every_steps = 3
    workdir = tmp_path / "sweep"
    assert run_sweep(config, str(workdir), stop_after_steps=3)["status"] == "interrupted"
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    result = subprocess.run(
        _cli("--mode=sweep", f"--config={config_path}:smoke", f"--workdir={workdir}",
             f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.progress_bar=False",
             "--config.checkpoint_every_steps=3", "--config.sweep.population_size=3", "--allow_config_change"),
        capture_output=True, text=True, env=subprocess_env, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "holds a checkpoint of a different sweep" in result.stderr
    assert "sweep.population_size: 4 -> 3" in result.stderr
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


def test_several_cpu_devices_run_collectives_in_program_order(subprocess_env):
    """--cpu_devices > 1 turns off XLA:CPU's concurrent scheduling of collectives (it deadlocked on 2 cores)."""
    from cnnjax.main import CPU_COLLECTIVES_FLAG, xla_flags_for_cpu_devices

    assert xla_flags_for_cpu_devices(1, "") == ""
    assert xla_flags_for_cpu_devices(2, "") == CPU_COLLECTIVES_FLAG
    assert xla_flags_for_cpu_devices(8, "--xla_dump_to=/tmp/d") == f"--xla_dump_to=/tmp/d {CPU_COLLECTIVES_FLAG}"
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    assert xla_flags_for_cpu_devices(2, mine) == mine  # the user's own choice stays
    # Applied before the backend starts: the devices exist and XLA saw the flag.
    code = ("import os; from cnnjax import main; main.FLAGS(['cnnjax', '--cpu_devices=2', '--compilation_cache=off', "
            "'--config=experiments/configs/default.py:smoke', '--workdir=unused']); main._setup_devices(); "
            "import jax; print(len(jax.devices()), os.environ['XLA_FLAGS'])")
    env = {**subprocess_env, "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", CPU_COLLECTIVES_FLAG]
