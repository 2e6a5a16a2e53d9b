"""Sweeps with Optuna: model-based rounds, the study of every sweep, resume, TensorBoard runs, bad input."""

import csv
import json
import os
import sys

import pytest

optuna = pytest.importorskip("optuna")

from cnnjax.tuning import plans  # noqa: E402
from cnnjax.tuning.context import SweepError  # noqa: E402
from cnnjax.tuning.sweep import run_sweep  # noqa: E402
from tests.tuning.test_sweep import smoke  # noqa: E402


def tpe_config(data_dir, **changes):
    return smoke("sweep_lr_wd", data_dir, **{"sweep.sampler": "tpe", "sweep.rounds": 2, "sweep.population_size": 3,
                                             "sweep.plan": "vmap", "checkpoint_every_steps": 3,
                                             "keep_checkpoints": 100, **changes})


def trials(workdir):
    study = optuna.load_study(study_name=os.path.basename(workdir), storage=f"sqlite:///{workdir}/study.db")
    return study.get_trials()


def test_tpe_rounds_reuse_the_compiled_step_and_tell_the_study(data, tmp_path, monkeypatch):
    data_dir, dataset = data
    calls = []
    choose = plans.choose_plan
    monkeypatch.setattr(plans, "choose_plan", lambda *a, **k: calls.append(1) or choose(*a, **k))
    summary = run_sweep(tpe_config(data_dir), str(tmp_path), dataset=dataset)
    assert len(calls) == 1  # round 2 trains with the step compiled for round 1
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [int(r["round"]) for r in rows] == [0, 0, 0, 1, 1, 1]
    done = trials(str(tmp_path))
    assert [t.number for t in done] == [int(r["trial"]) for r in rows] == list(range(6))
    for t, row in zip(done, rows):
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.value == pytest.approx(float(row["best_val_accuracy"]), rel=1e-5)
        assert t.params["optimizer.learning_rate"] == pytest.approx(float(row["optimizer.learning_rate"]), rel=1e-5)
        assert t.user_attrs["member"] == int(row["member"]) and t.user_attrs["round"] == int(row["round"])
    assert [r["trials"] for r in summary["rounds"]] == [[0, 1, 2], [3, 4, 5]]
    assert all(r["train_s"] > 0 and r["ask_s"] > 0 and r["tell_s"] > 0 for r in summary["rounds"])
    assert summary["study"] == {"name": tmp_path.name, "storage": f"sqlite:///{tmp_path}/study.db"}
    # One TensorBoard run per member, with its hyperparameters.
    assert sorted(os.listdir(tmp_path / "tensorboard")) == [f"member_{i:04d}" for i in range(6)]


def test_killed_tpe_sweep_resumes_with_each_trial_once(data, tmp_path, capsys):
    data_dir, dataset = data
    config = tpe_config(data_dir)
    run_sweep(config, str(tmp_path / "a"), dataset=dataset)
    # Stops: inside round 1, at the round boundary, inside round 2.
    for stop in (5, 8, 11):
        assert run_sweep(config, str(tmp_path / "b"), dataset=dataset, stop_after_steps=stop)["status"] == "interrupted"
    run_sweep(config, str(tmp_path / "b"), dataset=dataset)
    assert "Resuming the sweep at phase 1" in capsys.readouterr().out
    assert (tmp_path / "b" / "results.csv").read_text() == (tmp_path / "a" / "results.csv").read_text()
    resumed = trials(str(tmp_path / "b"))
    assert len(resumed) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in resumed)
    assert [t.params for t in resumed] == [t.params for t in trials(str(tmp_path / "a"))]


def test_model_free_sweeps_record_their_members(data, tmp_path):
    data_dir, dataset = data
    config = smoke("sweep_lr_wd", data_dir, **{"sweep.plan": "vmap"})
    run_sweep(config, str(tmp_path), dataset=dataset)
    rows = json.loads((tmp_path / "results.json").read_text())["members"]
    done = trials(str(tmp_path))
    assert len(done) == len(rows) == 4
    assert {t.user_attrs["member"]: t.params["optimizer.weight_decay"] for t in done} == pytest.approx(
        {r["member"]: r["optimizer.weight_decay"] for r in rows})


@pytest.mark.parametrize("changes, message", [
    ({"sweep.sampler": "tpee"}, "sweep.sampler='tpee' is unknown; valid choices: random, grid, quasi_random, "
                                "tpe, cmaes, gp"),
    ({"sweep.sampler": "tpe", "sweep.strategy": "pbt"}, "runs with sweep.strategy='single'"),
    ({"sweep.sampler": "tpe", "sweep.storage": "nosuchdb://h/x"}, "sweep.storage='nosuchdb://h/x' cannot be opened"),
    ({"sweep.sampler": "tpe", "sweep.space_extra": "schedule.boundaries_epochs=choice((30, 60), (50, 75))"},
     "Optuna cannot propose the choice value"),
])
def test_bad_optuna_settings_fail_before_training(data, tmp_path, changes, message):
    data_dir, dataset = data
    with pytest.raises(SweepError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        run_sweep(tpe_config(data_dir, **changes), str(tmp_path / "w"), dataset=dataset)
    assert not (tmp_path / "w" / "metrics.jsonl").exists() and not (tmp_path / "w" / "checkpoints").exists()


def test_study_with_another_space_is_refused_before_training(data, tmp_path):
    data_dir, dataset = data
    storage = f"sqlite:///{tmp_path}/shared.db"
    run_sweep(tpe_config(data_dir, **{"sweep.storage": storage, "sweep.study_name": "s", "sweep.rounds": 1}),
              str(tmp_path / "w1"), dataset=dataset)
    other = tpe_config(data_dir, **{"sweep.storage": storage, "sweep.study_name": "s", "sweep.rounds": 1,
                                    "sweep.space.optimizer.learning_rate": "loguniform(1e-4, 1)"})
    with pytest.raises(SweepError, match="recorded with a different space"):
        run_sweep(other, str(tmp_path / "w2"), dataset=dataset)
    assert not (tmp_path / "w2" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_sweep_commands_share_one_study(tmp_path, subprocess_env, load_config):
    import subprocess

    from cnnjax.data import load_dataset
    from tests.tuning.test_sweep import ROOT

    storage = f"sqlite:///{tmp_path}/shared.db"
    config = ROOT / "experiments" / "configs" / "sweep_lr_wd.py"
    commands = [[sys.executable, "-m", "cnnjax.main", "--mode=sweep", f"--config={config}:smoke",
                 f"--workdir={tmp_path / f'w{i}'}", f"--config.data.data_dir={tmp_path / 'tfds'}",
                 "--config.progress_bar=False", "--config.sweep.sampler=tpe", "--config.sweep.rounds=2",
                 "--config.sweep.population_size=3", f"--config.sweep.storage={storage}",
                 "--config.sweep.study_name=shared"] for i in range(2)]
    data_config = load_config("sweep_lr_wd", "smoke").data
    data_config.data_dir = str(tmp_path / "tfds")
    load_dataset(data_config)  # prepared once here, not by two commands at the same time
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env)
             for c in commands]
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 * 2 * 3
    assert len({t.number for t in done}) == len(done)
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == len(done)
    for i in range(2):
        rows = list(csv.DictReader(open(tmp_path / f"w{i}" / "results.csv")))
        assert sorted(int(r["trial"]) for r in rows) == sorted(
            t.number for t in done if t.user_attrs["workdir"] == str(tmp_path / f"w{i}"))
