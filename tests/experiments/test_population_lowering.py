"""The population-lowering benchmark: a record per lowering, each ratio its own figures', and the profile's CPU answer."""

import json
import sys

import jax.numpy as jnp

from experiments.benchmarks import population_lowering


def test_one_record_per_lowering_with_its_ratio(monkeypatch, tmp_path, capsys):
    out = tmp_path / "lowering.json"
    monkeypatch.setattr(sys, "argv", ["population_lowering", "--size=2", "--repeats=1", "--impls=im2col",
                                      f"--out={out}"])
    population_lowering.main()
    records = json.loads(out.read_text())["records"]
    assert [(r["conv_impl"], r["plan"], r["P"]) for r in records] == [("im2col", "vmap", 2)]
    for r in records:
        assert r["ratio"] == r["member_steps_per_s"] / r["sequential_member_steps_per_s"]
    assert "im2col     vmap" in capsys.readouterr().out


def test_profile_says_when_the_trace_has_no_device_ops():
    profile = population_lowering.device_op_times(lambda: jnp.ones(3) * 2, steps=1)
    assert "no device ops" in profile["error"] and "/host:CPU" in profile["error"]
