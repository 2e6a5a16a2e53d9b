"""The train-step benchmark's measurement runs, and its PyTorch twins match cnnjax's parameter counts."""

import importlib.util

import pytest

from experiments.benchmarks import step_time

REQUIRED_KEYS = {"model", "batch_size", "framework", "step_ms", "device"}


def test_measure_cnnjax_one_round():
    records = step_time.measure("lenet5", batch_size=4, frameworks=("cnnjax",), rounds=1, steps=1, warmup=1)
    (record,) = records
    assert REQUIRED_KEYS <= set(record)
    assert record["framework"] == "cnnjax" and record["error"] is None
    assert record["step_ms"] > 0 and record["params"] == 61_706


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is a benchmark-only dependency")
@pytest.mark.parametrize("name,count", [("lenet5", 61_706), ("resnet20_cifar", 269_722), ("resnet50", 25_557_032)])
def test_pytorch_twins_have_cnnjax_parameter_counts(name, count):
    model = step_time.torch_models()[name](step_time.NUM_CLASSES[name])
    assert sum(p.numel() for p in model.parameters()) == count
