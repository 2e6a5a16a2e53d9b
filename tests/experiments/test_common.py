"""The experiments' shared tables: a round trip, and a failed rewrite that keeps the old table whole."""

import os

import pytest

from experiments import common


class _Unprintable:
    def __str__(self):
        raise RuntimeError("cannot format this value")


def test_write_table_round_trips_and_a_failed_rewrite_keeps_the_old_files(tmp_path):
    rows = [{"model": "lenet5", "accuracy": 0.5, "diverged": False}, {"model": "mlp", "accuracy": 0.25}]
    csv_path, md_path = common.write_table(str(tmp_path), rows, title="Two models")
    assert common.read_table(csv_path) == [
        {"model": "lenet5", "accuracy": "0.5", "diverged": "False"},
        {"model": "mlp", "accuracy": "0.25", "diverged": ""},
    ]
    markdown = open(md_path).read()
    assert markdown.startswith("### Two models\n\n| model | accuracy | diverged |") and "| mlp | 0.25 |  |" in markdown
    before = {path: open(path).read() for path in (csv_path, md_path)}

    with pytest.raises(RuntimeError, match="cannot format"):
        common.write_table(str(tmp_path), [*rows, {"model": _Unprintable()}], title="Three models")
    assert {path: open(path).read() for path in (csv_path, md_path)} == before
    assert sorted(os.listdir(tmp_path)) == ["table.csv", "table.md"]  # No temporary file left behind.
