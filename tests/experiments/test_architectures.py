"""Counted parameters and multiply-adds of the zoo against the papers' and torchvision's figures."""

import os

import pytest

from experiments import architectures, common

EXPERIMENT = architectures  # the `result` fixture (conftest.py) runs it at smoke size


def test_smoke_table_and_plot(result):
    workdir, out = result
    assert set(out) == set(architectures.SMOKE_MODELS)
    rows = common.read_table(os.path.join(workdir, "table.csv"))
    assert list(rows[0])[:7] == ["model", "family", "dataset", "input", "params", "MACs", "depth"]
    assert os.path.getsize(os.path.join(workdir, "architectures.png")) > 10_000
    assert os.path.exists(os.path.join(workdir, "table.md"))


@pytest.mark.parametrize("name, params", [
    ("lenet5", 61_706),
    ("lenet5_original", 60_000),  # LeCun 1998: "60,000 trainable parameters"
    ("resnet20_cifar", 269_722),  # He 2016 Table 6: 0.27M
    ("resnet50", 25_557_032),  # torchvision
    ("vgg16", 138_357_544),  # torchvision; paper Table 2: 138M
    ("alexnet_original", 60_965_224),  # paper: 60 million
])
def test_parameter_counts(result, name, params):
    row = result[1][name]
    assert row["params"] == params
    if row["published_params"]:
        assert abs(row["params"] / row["published_params"] - 1) < 0.02


def test_macs_are_plausible(result):
    out = result[1]
    assert 3.8e9 <= out["resnet50"]["MACs"] <= 4.2e9  # paper 3.8 GFLOPs; torchvision v1.5 layout 4.1
    assert abs(out["vgg16"]["MACs"] / 15.47e9 - 1) < 0.01
    assert abs(out["resnet20_cifar"]["MACs"] / 40.55e6 - 1) < 0.01  # 41M as usually quoted
    assert out["lenet5"]["MACs"] < out["resnet20_cifar"]["MACs"] < out["resnet50"]["MACs"]


def test_depth_and_published_errors(result):
    out = result[1]
    assert {name: out[name]["depth"] for name in ("lenet5", "vgg16", "resnet20_cifar", "resnet50")} == {
        "lenet5": 5, "vgg16": 16, "resnet20_cifar": 20, "resnet50": 50}
    assert out["vgg16"]["layers"] == 16 and out["resnet20_cifar"]["layers"] == 20
    assert out["resnet20_cifar"]["published_top1_error"] == 8.75
    assert (out["alexnet_original"]["published_top1_error"], out["alexnet_original"]["published_top5_error"]) == (
        37.5, 17.0)
    assert out["lenet5_original"]["published_top1_error"] == 0.95


def test_published_table_covers_the_zoo():
    from cnnjax.models import list_models

    missing = set(list_models()) - set(architectures.PUBLISHED)
    assert not missing, f"add the papers' figures (or a blank entry) for {sorted(missing)}"
    cifar = [architectures.PUBLISHED[f"resnet{d}_cifar"]["published_top1_error"] for d in (20, 32, 44, 56, 110)]
    assert cifar == sorted(cifar, reverse=True)  # He 2016 Table 6: deeper is better up to 110 layers


def test_unknown_variant_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="smoke, full"):
        architectures.run(str(tmp_path), variant="all")
