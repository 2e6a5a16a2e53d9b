"""The summary tool: per-layer rows, totals and the all-models table."""

from __future__ import annotations

from cnnjax import summary
from cnnjax.models import get_model


def test_lenet5_rows_and_macs_by_hand():
    result = summary.summarize(get_model("lenet5", 10), (32, 32, 1))
    assert [r.path for r in result.rows] == ["Conv_0", "Conv_1", "Dense_0", "Dense_1", "Dense_2"]
    # conv: out_h * out_w * k_h * k_w * c_in * c_out; dense: in * out.
    expected_macs = [28 * 28 * 25 * 6, 10 * 10 * 25 * 6 * 16, 400 * 120, 120 * 84, 84 * 10]
    assert [r.macs for r in result.rows] == expected_macs
    assert result.total_params == sum(r.params for r in result.rows) == 61_706
    assert result.weight_layers == 5


def test_scanned_blocks_count_every_repeat():
    scanned = summary.summarize(get_model("resnet56_cifar", 10), (32, 32, 3))
    unrolled = summary.summarize(get_model("resnet56_cifar", 10, scan_blocks=False), (32, 32, 3))
    assert scanned.total_macs == unrolled.total_macs
    assert scanned.weight_layers == unrolled.weight_layers == 56
    assert sum(r.params for r in scanned.rows) == scanned.total_params == 853_018
    assert any(" x8" in r.kind for r in scanned.rows)


def test_grouped_convs_and_reference_macs():
    # torchvision/fvcore figures: ResNet-50 4.09 GMACs, AlexNet (original, 227) 0.72 G.
    resnet = summary.summarize(get_model("resnet50", 1000), (224, 224, 3))
    assert round(resnet.total_macs / 1e9, 2) == 4.09
    assert resnet.total_params == 25_557_032
    grouped = summary.summarize(get_model("alexnet_original", 1000), (227, 227, 3))
    conv2 = grouped.rows[1]
    assert conv2.macs == 27 * 27 * 5 * 5 * (96 // 2) * 256


def test_cli_prints_table_and_totals(capsys):
    summary.main(["--model=lenet5", "--num_classes=10", "--input_shape=28,28,1"])
    out = capsys.readouterr().out
    assert "lenet5 at 28x28x1: 61,706 parameters, 416,520 multiply-adds" in out
    assert "Dense_2" in out and "total" in out
