"""Optuna studies: space mapping, batch asks, idempotent records, shared studies, bad input."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import pytest

optuna = pytest.importorskip("optuna")

from cnnjax.tuning import space as space_lib  # noqa: E402
from cnnjax.tuning import study as study_lib  # noqa: E402
from cnnjax.tuning.runner import MemberRecord  # noqa: E402

SPACE = {
    "optimizer.learning_rate": space_lib.parse_distribution("lr", "loguniform(1e-3, 1)"),
    "optimizer.momentum": space_lib.parse_distribution("m", "one_minus_loguniform(0.8, 0.999)"),
    "loss.label_smoothing": space_lib.parse_distribution("ls", "uniform(0, 0.2)"),
    "batch_size": space_lib.parse_distribution("b", "int(16, 64)"),
    "model.name": space_lib.parse_distribution("n", "choice('lenet5', 'mlp')"),
}


def _sweep_config(**kw):
    c = ml_collections.ConfigDict({"sampler": "tpe", "seed": 0, "storage": "", "study_name": ""})
    c.update(kw)
    return c


def test_distributions_map_each_kind():
    d = study_lib.distributions(SPACE)
    lr = d["optimizer.learning_rate"]
    assert (lr.low, lr.high, lr.log) == (1e-3, 1.0, True)
    m = d["1-optimizer.momentum"]  # log-uniform over 1 - beta
    assert m.log and math.isclose(m.low, 0.001) and math.isclose(m.high, 0.2)
    assert not d["loss.label_smoothing"].log and d["loss.label_smoothing"].high == 0.2
    assert isinstance(d["batch_size"], optuna.distributions.IntDistribution) and d["batch_size"].low == 16
    assert d["model.name"].choices == ("lenet5", "mlp")


def test_choices_optuna_cannot_propose():
    space = {"schedule.boundaries_epochs": space_lib.parse_distribution("b", "choice((30, 60), (50, 75))")}
    with pytest.raises(study_lib.StudyError, match=r"cannot propose the choice value\(s\) \[\(30, 60\), \(50, 75\)\]"):
        study_lib.distributions(space)
    # Recorded only (model-free samplers): stored as their repr.
    assert study_lib.distributions(space, propose=False)["schedule.boundaries_epochs"].choices == (
        "(30, 60)", "(50, 75)")
    assert study_lib.to_params({"schedule.boundaries_epochs": (50, 75)}, space) == {
        "schedule.boundaries_epochs": "(50, 75)"}


def test_params_round_trip():
    values = {"optimizer.learning_rate": 0.03, "optimizer.momentum": 0.95, "loss.label_smoothing": 0.1,
              "batch_size": 32, "model.name": "mlp"}
    params = study_lib.to_params(values, SPACE)
    assert math.isclose(params["1-optimizer.momentum"], 0.05)
    back = study_lib.from_params(params, SPACE)
    assert back.keys() == values.keys()
    assert math.isclose(back["optimizer.momentum"], 0.95) and back["batch_size"] == 32
    assert back["model.name"] == "mlp"


def _record(member, accuracy, values, diverged=False):
    return MemberRecord(member=member, values=values, steps=10, diverged=diverged, best_val_accuracy=accuracy,
                        val_accuracy=accuracy)


def test_tpe_batches_are_distinct_in_range_and_told(tmp_path):
    space = {k: SPACE[k] for k in ("optimizer.learning_rate", "loss.label_smoothing")}
    study = study_lib.open_study(_sweep_config(), str(tmp_path / "w"), space)
    assert study.storage_url == f"sqlite:///{tmp_path / 'w' / 'study.db'}"
    assert study.name == "w"
    for round_index in range(3):
        asked = study.ask(8, round_index=round_index)
        keys = {tuple(sorted(v.items())) for _, v in asked}
        assert len(keys) == 8
        for number, values in asked:
            assert 1e-3 <= values["optimizer.learning_rate"] <= 1 and 0 <= values["loss.label_smoothing"] <= 0.2
            acc = 1.0 - abs(math.log10(values["optimizer.learning_rate"]) + 1.5) / 3
            study.tell(number, _record(number, acc, values, diverged=number == 0))
    trials = study.study.get_trials()
    assert len(trials) == 24
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the diverged member
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 23
    assert trials[5].user_attrs["member"] == 5 and trials[5].user_attrs["steps"] == 10
    assert [t.user_attrs["round"] for t in trials] == [r for r in range(3) for _ in range(8)]
    # A told trial told again (a resumed sweep) is left as it was.
    study.tell(3, _record(3, 0.0, asked[0][1]))
    assert study.study.get_trials()[3].value == trials[3].value


def test_record_adds_each_member_once(tmp_path):
    space = {"optimizer.learning_rate": SPACE["optimizer.learning_rate"]}
    study = study_lib.open_study(_sweep_config(sampler="random"), str(tmp_path / "w"), space)
    recs = [_record(i, 0.5 + i / 10, {"optimizer.learning_rate": 0.01 * (i + 1)}) for i in range(3)]
    assert study.record(recs) == 3
    assert study.record(recs) == 0
    trials = study.study.get_trials()
    assert [t.params["optimizer.learning_rate"] for t in trials] == [0.01, 0.02, 0.03]
    assert [t.value for t in trials] == [0.5, 0.6, 0.7]
    # A coarse-to-fine round may widen a range past its first bounds: the trial's range widens with it.
    assert study.record([_record(3, 0.9, {"optimizer.learning_rate": 3.0})]) == 1
    last = study.study.get_trials()[-1]
    assert last.params["optimizer.learning_rate"] == 3.0
    assert (last.distributions["optimizer.learning_rate"].low, last.distributions["optimizer.learning_rate"].high) == (
        1e-3, 3.0)


def test_study_with_another_space_is_refused(tmp_path):
    space = {"optimizer.learning_rate": SPACE["optimizer.learning_rate"]}
    study_lib.open_study(_sweep_config(), str(tmp_path / "w"), space)
    other = {"optimizer.learning_rate": space_lib.parse_distribution("lr", "loguniform(1e-4, 1)")}
    with pytest.raises(study_lib.StudyError, match=r"different space:\n  optimizer.learning_rate: "
                       r"loguniform\(0.001, 1.0\) -> loguniform\(0.0001, 1.0\)"):
        study_lib.open_study(_sweep_config(), str(tmp_path / "w"), other)


@pytest.mark.parametrize("storage, message", [
    ("nosuchdb://x", "cannot be opened"),
    ("sqlite:////proc/nonexistent/dir/study.db", "cannot be opened"),
    ("plainword", "neither a database URL"),
])
def test_bad_storage_is_named(tmp_path, storage, message):
    with pytest.raises(study_lib.StudyError, match=message) as err:
        study_lib.open_study(_sweep_config(storage=storage), str(tmp_path / "w"),
                             {"optimizer.learning_rate": SPACE["optimizer.learning_rate"]})
    assert storage in str(err.value)


def test_bucket_workdir_needs_storage():
    with pytest.raises(study_lib.StudyError, match="sweep.storage must be given.*journal:"):
        study_lib.validate_storage(_sweep_config(), "gs://bucket/sweep")
    assert study_lib.validate_storage(_sweep_config(storage="journal:/tmp/s.log"), "gs://bucket/sweep") == (
        "journal:/tmp/s.log", "sweep")


WORKER = textwrap.dedent("""
    import json, math, sys
    import ml_collections
    from cnnjax.tuning import space as space_lib, study as study_lib
    from cnnjax.tuning.runner import MemberRecord
    storage, workdir, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    space = {"optimizer.learning_rate": space_lib.parse_distribution("lr", "loguniform(1e-3, 1)"),
             "loss.l2": space_lib.parse_distribution("l2", "loguniform(1e-6, 1e-2)")}
    cfg = ml_collections.ConfigDict({"sampler": "tpe", "seed": 0, "storage": storage, "study_name": "shared"})
    study = study_lib.open_study(cfg, workdir, space)
    for r in range(rounds):
        for number, values in study.ask(6, round_index=r):
            acc = 1 - abs(math.log10(values["optimizer.learning_rate"]) + 1.5) / 3
            study.tell(number, MemberRecord(member=number, values=values, best_val_accuracy=acc))
""")


def _two_workers(storage, tmp_path, open_with):
    """Runs two WORKER processes on one study; returns all its trials."""
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, storage, str(tmp_path / f"w{i}"), "3"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    return optuna.load_study(study_name="shared", storage=open_with).get_trials()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_share_one_study(tmp_path, kind):
    storage = f"sqlite:///{tmp_path}/shared.db" if kind == "sqlite" else f"journal:{tmp_path}/shared.log"
    every = _two_workers(storage, tmp_path, study_lib.open_storage(storage))
    trials = [t for t in every if t.state == optuna.trial.TrialState.COMPLETE]
    # Both workers start from the same seed: proposals another worker made first are failed and asked again.
    assert all(t.user_attrs.get("duplicate") for t in every if t.state != optuna.trial.TrialState.COMPLETE)
    assert len(trials) == 2 * 3 * 6
    assert len({t.number for t in trials}) == len(trials)
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == len(params)
    assert {t.user_attrs["workdir"] for t in trials} == {str(tmp_path / "w0"), str(tmp_path / "w1")}


def _postgres_server():
    """A PostgreSQL server on 127.0.0.1, run by the `postgres` user in a scratch folder; returns (URL, stop)."""
    import shutil
    import socket
    import tempfile

    if os.geteuid() != 0 or not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("needs root and PostgreSQL's initdb/pg_ctl (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason='needs the driver: pip install "psycopg[binary]"')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(tempfile.mkdtemp(prefix="cnnjax-pg-"))  # pytest's tmp_path is closed to other users
    data = root / "pgdata"
    data.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(data, "postgres")

    def as_postgres(command):
        subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True, timeout=120)

    as_postgres(f"initdb -D {data} -A trust")
    as_postgres(f"pg_ctl -D {data} -o '-h 127.0.0.1 -p {port} -k {data}' -l {root}/server.log -w start")
    as_postgres(f"createdb -h 127.0.0.1 -p {port} study")

    def stop():
        as_postgres(f"pg_ctl -D {data} -m fast stop")
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/study", stop


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path):
    url, stop = _postgres_server()
    try:
        trials = [t for t in _two_workers(url, tmp_path, url) if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(trials) == 2 * 3 * 6
        params = [json.dumps(t.params, sort_keys=True) for t in trials]
        assert len(set(params)) == len(params)
    finally:
        stop()


def test_member_runs_carry_hparams_and_curves(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    from cnnjax.tuning import tb_hparams

    recs = [MemberRecord(member=i, values={"optimizer.learning_rate": 0.1 * (i + 1), "model.name": "lenet5"},
                         steps=20, best_val_accuracy=0.5 + i / 10, val_accuracy=0.4 + i / 10,
                         val_history=[(10, 0.3), (20, 0.4 + i / 10)], train_history=[(10, 2.0, 0.2), (20, 1.0, 0.5)])
            for i in range(2)]
    root = tb_hparams.write_member_runs(str(tmp_path), recs, ["optimizer.learning_rate", "model.name"])
    tb_hparams.write_member_runs(str(tmp_path), recs, ["optimizer.learning_rate", "model.name"])  # rewritten once
    assert sorted(os.listdir(root)) == ["member_0000", "member_0001"]
    run = os.path.join(root, "member_0001")
    (event_file,) = os.listdir(run)
    scalars, hparams = {}, {}
    for raw in tf.data.TFRecordDataset(os.path.join(run, event_file)):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    hparams = {k: (v.number_value if v.HasField("number_value") else v.string_value)
                               for k, v in data.session_start_info.hparams.items()}
            elif value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    assert hparams == {"optimizer.learning_rate": pytest.approx(0.2), "model.name": "lenet5"}
    assert scalars["val/accuracy"] == [(10, pytest.approx(0.3)), (20, pytest.approx(0.5))]
    assert scalars["hparams/best_val_accuracy"] == [(20, pytest.approx(0.6))]
    assert [s for s, _ in scalars["train/loss"]] == [10, 20]
