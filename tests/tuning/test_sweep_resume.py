"""Sweep checkpoints: a stopped, killed or corrupted sweep resumes to the uninterrupted result, bit for bit."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnnjax.training.checkpoint import Checkpointer
from cnnjax.training.train import WorkdirConfigMismatchError
from cnnjax.tuning.context import SweepError
from cnnjax.tuning.sweep import run_sweep
from tests.tuning.test_sweep import ROOT, smoke

# Strategy -> (config changes, stop points in sweep steps; each stop is followed by a resume).
# Points sit mid-phase, on a phase boundary (between rounds / rungs / brackets / PBT intervals) and after.
CASES = {
    "single": ({}, [3, 5]),
    "coarse_to_fine": ({}, [5, 8, 11]),
    "successive_halving": ({"num_epochs": 2, "sweep.min_epochs": 0.5, "sweep.eta": 2}, [4, 5, 10]),
    "hyperband": ({"num_epochs": 1, "sweep.min_epochs": 0.5, "sweep.eta": 2}, [4, 10]),
    "pbt": ({"num_epochs": 2, "sweep.pbt_interval_epochs": 0.5}, [4, 6, 12]),
}


def sweep_config(data_dir, strategy, **changes):
    extra, _ = CASES[strategy]
    name = "sweep_coarse_to_fine" if strategy == "coarse_to_fine" else "sweep_lr_wd"
    return smoke(name, data_dir, **{"sweep.strategy": strategy, "sweep.plan": "vmap", "checkpoint_every_steps": 3,
                                    "keep_checkpoints": 100, **extra, **changes})


def checkpoint_arrays(workdir):
    """Orbax step -> the population's array leaves, of every checkpoint kept."""
    checkpointer = Checkpointer(workdir)
    out = {}
    for step in checkpointer.all_steps():
        tree = checkpointer._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        out[step] = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree["state"])]
    checkpointer.close()
    return out


def assert_same_sweep(reference, resumed):
    """Same results rows, same population arrays at every common checkpoint, no duplicated metric records."""
    assert (resumed / "results.csv").read_text() == (reference / "results.csv").read_text()
    assert json.loads((resumed / "results.json").read_text()) == json.loads((reference / "results.json").read_text())
    ref, res = checkpoint_arrays(reference), checkpoint_arrays(resumed)
    assert set(ref) <= set(res)  # the resumed sweep may hold extra (stop-time) checkpoints
    for step, leaves in ref.items():
        assert len(leaves) == len(res[step])
        for a, b in zip(leaves, res[step]):
            np.testing.assert_array_equal(a, b, err_msg=f"checkpoint {step}")
    records = [json.loads(line) for line in open(resumed / "metrics.jsonl")]
    keys = [(r["phase"], r["step"], r["member"], "val/accuracy" in r) for r in records]
    assert len(keys) == len(set(keys)), "duplicated metric records"
    reference_keys = {(r["phase"], r["step"], r["member"], "val/accuracy" in r)
                      for r in map(json.loads, open(reference / "metrics.jsonl"))}
    # Every record of the uninterrupted sweep is there (a stop adds flushes at its step, nothing else).
    assert reference_keys <= set(keys)


@pytest.mark.parametrize("strategy", [
    "single", "successive_halving",
    pytest.param("coarse_to_fine", marks=pytest.mark.slow),
    pytest.param("hyperband", marks=pytest.mark.slow),
    pytest.param("pbt", marks=pytest.mark.slow),
])
def test_stopped_and_resumed_sweep_equals_uninterrupted(data, tmp_path, strategy, capsys):
    data_dir, dataset = data
    config = sweep_config(data_dir, strategy)
    reference = run_sweep(config, str(tmp_path / "a"), dataset=dataset)
    for stop in CASES[strategy][1]:
        out = run_sweep(config, str(tmp_path / "b"), dataset=dataset, stop_after_steps=stop)
        assert out["status"] == "interrupted"
    resumed = run_sweep(config, str(tmp_path / "b"), dataset=dataset)
    assert "Resuming the sweep at phase" in capsys.readouterr().out
    assert resumed["best_member"] == reference["best_member"]
    assert_same_sweep(tmp_path / "a", tmp_path / "b")


def test_corrupt_checkpoint_falls_back_and_other_sweeps_are_refused(data, tmp_path, capsys):
    data_dir, dataset = data
    config = sweep_config(data_dir, "single")
    run_sweep(config, str(tmp_path / "a"), dataset=dataset)
    work = tmp_path / "b"
    run_sweep(config, str(work), dataset=dataset, stop_after_steps=6)  # checkpoints at steps 3 and 6
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}

    # A different sweep on this workdir: refused with the differences, nothing written.
    with pytest.raises(WorkdirConfigMismatchError, match="sweep.population_size: 4 -> 3"):
        run_sweep(sweep_config(data_dir, "single", **{"sweep.population_size": 3}), str(work), dataset=dataset)
    with pytest.raises(SweepError, match=r"different sweep:\n  sweep.population_size: 4 -> 3"):
        run_sweep(sweep_config(data_dir, "single", **{"sweep.population_size": 3}), str(work), dataset=dataset,
                  allow_config_change=True)
    with pytest.raises(SweepError, match="sweep.strategy: 'single' -> 'pbt'"):
        run_sweep(sweep_config(data_dir, "single", **{"sweep.strategy": "pbt"}), str(work), dataset=dataset,
                  allow_config_change=True)
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before

    # The latest checkpoint damaged (as a disk fault would): the previous one is used, and the log says so.
    latest = max(Checkpointer(str(work)).all_steps())
    for path in glob.glob(str(work / "checkpoints" / str(latest) / "state" / "**"), recursive=True):
        if os.path.isfile(path) and os.path.getsize(path):
            Path(path).write_bytes(b"not a checkpoint")
    capsys.readouterr()
    run_sweep(config, str(work), dataset=dataset)
    out = capsys.readouterr().out
    assert f"Checkpoint {latest} in {work / 'checkpoints'} is unreadable" in out and "using the previous one" in out
    assert "Resuming the sweep at phase 0 (4 members), step 3" in out
    assert_same_sweep(tmp_path / "a", work)


def _cli(workdir, data_dir, *extra):
    return [sys.executable, "-m", "cnnjax.main", "--mode=sweep",
            f"--config={ROOT / 'experiments' / 'configs' / 'sweep_lr_wd.py'}:smoke", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", "--config.progress_bar=False",
            "--config.data.augment.crop_padding=0", "--config.sweep.plan=vmap",
            "--config.checkpoint_every_steps=3", "--config.keep_checkpoints=100", *extra]


def _run_until(command, workdir, ready, sig, timeout=300):
    """Starts `command`, sends `sig` once `ready(workdir, entries at start)` holds; returns (code, output, sent)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    directory = os.path.join(workdir, "checkpoints")
    initial = set(os.listdir(directory)) if os.path.isdir(directory) else set()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline, sent = time.time() + timeout, False
    while proc.poll() is None and time.time() < deadline:
        if ready(workdir, initial):
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.002)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out, sent


def _has_checkpoint(step):
    return lambda w, initial: os.path.isdir(os.path.join(w, "checkpoints", str(step)))


def _saving(w, initial):
    """An orbax save in progress (its temporary directory, not one left by an earlier kill)."""
    return any(os.path.basename(p) not in initial
               for p in glob.glob(os.path.join(w, "checkpoints", "*orbax-checkpoint-tmp*")))


def _run_to_end(workdir, data_dir, extra=()):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(_cli(workdir, data_dir, *extra), capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_sigterm_checkpoints_and_sigkill_resumes(data, tmp_path):
    data_dir, dataset = data
    run_sweep(sweep_config(data_dir, "single"), str(tmp_path / "a"), dataset=dataset)
    work = str(tmp_path / "b")
    code, out, sent = _run_until(_cli(work, data_dir), work, _has_checkpoint(3000), signal.SIGTERM)
    assert sent and code == 0 and "Sweep stopped at phase 0" in out, out[-3000:]
    code, out, sent = _run_until(_cli(work, data_dir), work, _has_checkpoint(6000), signal.SIGKILL)
    assert sent and code == -signal.SIGKILL, out[-3000:]
    out = _run_to_end(work, data_dir)
    assert "Resuming the sweep at phase 0" in out
    assert_same_sweep(tmp_path / "a", Path(work))


@pytest.mark.slow
def test_sigkill_at_many_points_of_a_halving_sweep(data, tmp_path):
    """Kills mid-rung, during a checkpoint save, right after a rung's boundary checkpoint, in the last rung."""
    data_dir, dataset = data
    changes = ["--config.sweep.strategy=successive_halving", "--config.num_epochs=2",
               "--config.sweep.min_epochs=0.5", "--config.sweep.eta=2"]
    run_sweep(sweep_config(data_dir, "successive_halving"), str(tmp_path / "a"), dataset=dataset)
    work = str(tmp_path / "b")
    # Orbax steps: 1000 * sweep step + phase. Rung 1 ends at sweep step 4, rung 2 at 8, rung 3 at 16.
    points = [_has_checkpoint(3000), _saving, _has_checkpoint(4000), _saving, _has_checkpoint(8001),
              _has_checkpoint(12002)]
    killed = 0
    for ready in points:
        if os.path.exists(os.path.join(work, "results.json")):
            break
        code, out, sent = _run_until(_cli(work, data_dir, *changes), work, ready, signal.SIGKILL)
        assert code == (-signal.SIGKILL if sent else 0), out[-3000:]
        killed += sent
    assert killed >= 5
    if not os.path.exists(os.path.join(work, "results.json")):
        assert "Resuming the sweep" in _run_to_end(work, data_dir, changes)
    assert_same_sweep(tmp_path / "a", Path(work))


@pytest.mark.slow
def test_sigkilled_tpe_sweep_resumes_with_each_trial_once(data, tmp_path):
    """Kills in round 1, between the rounds and in round 2 of a model-based sweep."""
    optuna = pytest.importorskip("optuna")
    data_dir, dataset = data
    tpe = {"sweep.sampler": "tpe", "sweep.rounds": 2, "sweep.population_size": 3}
    run_sweep(sweep_config(data_dir, "single", **tpe), str(tmp_path / "a"), dataset=dataset)
    flags = [f"--config.{k}={v}" for k, v in tpe.items()]
    work = str(tmp_path / "b")
    # Orbax steps: 1000 * sweep step + phase; round 1 (phase 0) ends at sweep step 8.
    for ready in (_has_checkpoint(6000), _has_checkpoint(8000), _has_checkpoint(11001)):
        code, out, sent = _run_until(_cli(work, data_dir, *flags), work, ready, signal.SIGKILL)
        assert sent and code == -signal.SIGKILL, out[-3000:]
    assert "Resuming the sweep at phase 1" in _run_to_end(work, data_dir, flags)
    assert_same_sweep(tmp_path / "a", Path(work))
    trials = optuna.load_study(study_name="b", storage=f"sqlite:///{work}/study.db").get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_best_members_are_run_workdirs_with_test_accuracy(data, tmp_path):
    data_dir, dataset = data
    from cnnjax.training.train import train_and_evaluate
    from cnnjax.tuning.population import member_config
    from cnnjax.tuning.sweep_config import read_space

    config = sweep_config(data_dir, "single", **{"sweep.keep_best": 2})
    summary = run_sweep(config, str(tmp_path), dataset=dataset)
    rows = json.loads((tmp_path / "results.json").read_text())["members"]
    ranked = sorted(rows, key=lambda r: (-r["best_val_accuracy"], r["member"]))
    best = [r["member"] for r in ranked[:2]]
    assert [b["member"] for b in summary["best_runs"]] == best
    assert sorted(os.listdir(tmp_path / "best")) == sorted(str(m) for m in best)
    # Test accuracy for the kept members only.
    assert [r["member"] for r in rows if r.get("test_accuracy") is not None] == sorted(best)
    for row in ranked[:2]:
        workdir = tmp_path / "best" / str(row["member"])
        saved = json.loads((workdir / "summary.json").read_text())
        assert saved["eval/accuracy"] == row["test_accuracy"] and saved["steps"] == 8
        values = {k: row[k] for k in read_space(config)}
        assert json.loads((workdir / "config.json").read_text())["optimizer"]["learning_rate"] == \
            values["optimizer.learning_rate"]
        # An ordinary run on that workdir with the member's config resumes the finished member
        # (no training left) and evaluates it to the same figures.
        run = train_and_evaluate(member_config(config, values), str(workdir), dataset=dataset)
        assert run["steps"] == 8
        assert run["eval/accuracy"] == saved["eval/accuracy"]
        # (the population divides in float32)
        assert run["val/accuracy"] == pytest.approx(row["final_val_accuracy"], abs=1e-6)


def test_planned_member_steps_match_the_rungs():
    from cnnjax.config import base_config
    from cnnjax.tuning.budget import planned_member_steps
    from cnnjax.tuning.sweep_config import read_space

    config = base_config()
    config.batch_size, config.num_epochs = 32, 2
    config.sweep.space_extra = "optimizer.learning_rate=loguniform(1e-3, 1)"
    space = read_space(config)
    config.sweep.population_size = 4
    config.sweep.strategy, config.sweep.min_epochs, config.sweep.eta = "successive_halving", 0.5, 2
    # Rungs of 4, 2, 1 members to 4, 8, 16 steps (8 steps per epoch): 4*4 + 2*4 + 1*8.
    assert planned_member_steps(config, space, 256) == 32
    config.sweep.strategy, config.num_epochs = "hyperband", 1
    # Brackets of 2 members: 2*4 + 1*4 (rungs at 0.5 and 1 epoch), then 2*8.
    assert planned_member_steps(config, space, 256) == 28
    config.sweep.strategy, config.sweep.rounds = "coarse_to_fine", 3
    assert planned_member_steps(config, space, 256) == 3 * 4 * 8
