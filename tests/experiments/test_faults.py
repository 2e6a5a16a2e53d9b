"""The fault-injection harness: its file checks find real damage; kill points end to end (slow)."""

import json

import pytest

from experiments.benchmarks import faults, workdir_checks


def test_file_checks_tell_whole_files_from_torn_ones(tmp_path):
    (tmp_path / "summary.json").write_text('{"steps": 8}\n')
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    (tmp_path / ".summary.json.x.tmp").write_text("{")  # a writer's temporary file: not an output
    assert workdir_checks.check_workdir(tmp_path, allow_torn_tail=False) == {}

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert workdir_checks.check_workdir(tmp_path, allow_torn_tail=True) == {}
    assert workdir_checks.check_workdir(tmp_path, allow_torn_tail=False) == {"metrics.jsonl": "torn last line"}
    (tmp_path / "summary.json").write_text('{"steps": 8, "eval/acc')
    (tmp_path / "results.csv").write_text("a,b\n1,2\n3")
    problems = workdir_checks.check_workdir(tmp_path, allow_torn_tail=True)
    assert sorted(problems) == ["results.csv", "summary.json"]
    assert problems["summary.json"].startswith("JSONDecodeError")


def test_sqlite_check_runs_the_integrity_check_on_a_copy(tmp_path):
    import sqlite3

    connection = sqlite3.connect(tmp_path / "study.db")
    connection.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, value REAL)")
    connection.executemany("INSERT INTO trials (value) VALUES (?)", [(i / 7,) for i in range(500)])
    connection.commit()
    connection.close()
    before = (tmp_path / "study.db").read_bytes()
    assert workdir_checks.check_workdir(tmp_path, allow_torn_tail=False) == {}
    assert (tmp_path / "study.db").read_bytes() == before
    (tmp_path / "study.db").write_bytes(before[:4096] + b"\xff" * (len(before) - 4096))  # pages overwritten
    problem = workdir_checks.check_workdir(tmp_path, allow_torn_tail=False)["study.db"]
    assert "integrity_check" in problem or "DatabaseError" in problem, problem


def test_phase_boundaries_are_the_last_checkpoint_of_each_phase_but_the_final():
    names = ["2000", "4000", "4001", "6001", "8002", "16002", "6001.orbax-checkpoint-tmp-7"]
    assert faults.phase_boundaries(names) == ["4000", "6001"]
    assert faults.phase_boundaries(["2000", "4000"]) == []


def test_event_file_framing(tmp_path):
    record = (5).to_bytes(8, "little") + b"\0" * 4 + b"hello" + b"\0" * 4
    (tmp_path / "events.out.tfevents.1").write_bytes(record * 3)
    assert workdir_checks.check_records(tmp_path / "events.out.tfevents.1") is None
    (tmp_path / "events.out.tfevents.1").write_bytes(record * 3 + record[:10])
    assert workdir_checks.check_records(tmp_path / "events.out.tfevents.1") == "torn tail"


@pytest.mark.slow
def test_two_kill_points_resume_to_the_uninterrupted_result(tmp_path):
    half = faults.run_half("single", faults.SINGLE_FLAGS, 2, 0, tmp_path, tmp_path / "tfds")
    assert half["kill_points"] == 2
    assert half["resumed"] == 2, json.dumps(half["points"], indent=1)
    assert half["identical"] == 2, json.dumps(half["points"], indent=1)
    assert half["files_corrupted"] == 0
    assert [p["kind"] for p in half["points"]] == ["random", "checkpoint"]


@pytest.mark.slow
def test_a_sweep_killed_between_two_phases_resumes_to_the_uninterrupted_sweep(tmp_path):
    half = faults.run_half("sweep", faults.SWEEP_FLAGS, 1, 0, tmp_path, tmp_path / "tfds",
                           snapshot=faults.sweep_snapshot, kinds=("phase",))
    assert half["kill_points"] == 1
    assert half["identical"] == 1, json.dumps(half["points"], indent=1, default=str)
    assert half["files_corrupted"] == 0
    point = half["points"][0]
    assert point["checkpoint"] in point["checkpoints_left"]  # killed after that boundary checkpoint
    assert set(point["equal"]) == {"results.csv", "results.json", "summary", "plans", "metrics", "checkpoint",
                                   "best checkpoint", "best summary"}
