"""The model zoo next to its papers: parameters, multiply-adds, depth and published error.

    python -m experiments.architectures --workdir=/tmp/exp/architectures [--variant=smoke|full]

Parameters and MACs are counted by `cnnjax.summary.summarize` (abstract tracing,
no memory) at each model's canonical input (`cnnjax.models.canonical_input_shape`)
with 1000 classes for ImageNet-sized inputs and 10 otherwise; depth is the
paper's nominal depth (`cnnjax.models.nominal_depth`), `layers` the conv and
dense layers counted. The published figures are copied from the papers (table
named in `source`); a blank means the paper gives none for that model. ImageNet
errors are ILSVRC-2012 validation errors unless `dataset` says otherwise; the
CIFAR-10 errors are test errors with the standard crop-and-flip augmentation.
`smoke` summarises a handful of models, `full` every registered one.
"""

from __future__ import annotations

import re
import time

from experiments import common

SMOKE_MODELS = ("lenet5", "lenet5_original", "alexnet_original", "vgg16", "resnet20_cifar", "resnet50")

_HE16 = "He et al. 2016 (Deep Residual Learning)"
_VGG = "Simonyan & Zisserman 2015, Table 3 (single scale, S=Q=256); params Table 2"
_IN = "ImageNet (ILSVRC-2012 val)"
_C10 = "CIFAR-10 test (+aug)"


def _entry(dataset, top1=None, top5=None, source="", params=None, gmacs=None, note=""):
    return {"dataset": dataset, "published_top1_error": top1, "published_top5_error": top5, "source": source,
            "published_params": params, "published_gmacs": gmacs, "note": note}


# Errors in %, params as counts, GMACs (multiply-adds x 1e9) as the papers give them.
PUBLISHED = {
    "lenet5": _entry("MNIST test", note="modern variant (ReLU, max pooling, full C3 table): no published figure"),
    "lenet5_original": _entry("MNIST test", 0.95, source="LeCun et al. 1998, sec. III-C (no distortions)",
                              params=60_000),
    "mlp": _entry("MNIST", note="generic MLP for the init experiments"),
    "alexnet_original": _entry("ImageNet (ILSVRC-2010 test)", 37.5, 17.0, "Krizhevsky et al. 2012, Table 1 (1 CNN)",
                               params=60_000_000),
    "alexnet": _entry(_IN, note="single-tower variant (Krizhevsky 2014 / torchvision): no figure taken"),
    "vgg11": _entry(_IN, 29.6, 10.4, _VGG + " (config A)", params=133_000_000),
    "vgg13": _entry(_IN, 28.7, 9.9, _VGG + " (config B)", params=133_000_000),
    "vgg16": _entry(_IN, 27.0, 8.8, _VGG + " (config D)", params=138_000_000),
    "vgg19": _entry(_IN, 27.3, 9.0, _VGG + " (config E)", params=144_000_000, gmacs=19.6),
    "googlenet": _entry(_IN, None, 10.07, "Szegedy et al. 2015, Table 3 (1 model, 1 crop); the ILSVRC-2014 "
                        "entry (7 models x 144 crops, test) reached 6.67 (Table 2)",
                        note="paper predates BN; this model follows torchvision (BN, 3x3 '5x5' branch)"),
    "resnet18": _entry(_IN, 27.88, None, _HE16 + ", Table 2 (10-crop)", gmacs=1.8),
    "resnet34": _entry(_IN, 24.52, 7.46, _HE16 + ", Table 3 (option B, 10-crop)", gmacs=3.6),
    "resnet50": _entry(_IN, 22.85, 6.71, _HE16 + ", Table 3 (10-crop)", gmacs=3.8,
                       note="stride on the 3x3 conv (torchvision v1.5): 4.1 GMACs vs the paper's 3.8"),
    "resnet101": _entry(_IN, 21.75, 6.05, _HE16 + ", Table 3 (10-crop)", gmacs=7.6),
    "resnet152": _entry(_IN, 21.43, 5.71, _HE16 + ", Table 3 (10-crop)", gmacs=11.3),
    "resnet20_cifar": _entry(_C10, 8.75, source=_HE16 + ", Table 6", params=270_000),
    "resnet32_cifar": _entry(_C10, 7.51, source=_HE16 + ", Table 6", params=460_000),
    "resnet44_cifar": _entry(_C10, 7.17, source=_HE16 + ", Table 6", params=660_000),
    "resnet56_cifar": _entry(_C10, 6.97, source=_HE16 + ", Table 6", params=850_000),
    "resnet110_cifar": _entry(_C10, 6.43, source=_HE16 + ", Table 6 (best of 5; mean 6.61)", params=1_700_000),
    "resnet1202_cifar": _entry(_C10, 7.93, source=_HE16 + ", Table 6", params=19_400_000),
    "preact_resnet164": _entry(_C10, 5.46, source="He et al. 2016b (Identity Mappings), Table 3", params=1_700_000),
    "preact_resnet1001": _entry(_C10, 4.92, source="He et al. 2016b (Identity Mappings), Table 3",
                                params=10_200_000),
    "densenet121": _entry(_IN, 25.02, 7.71, "Huang et al. 2017, Table 3 (single crop)"),
    "densenet169": _entry(_IN, 23.80, 6.85, "Huang et al. 2017, Table 3 (single crop)"),
    "densenet201": _entry(_IN, 22.58, 6.34, "Huang et al. 2017, Table 3 (single crop)"),
    "densenet161": _entry(_IN, 22.2, None, "authors' DenseNet repository README (Torch model, 1 crop); "
                          "not in the paper's table"),
    "densenet_bc100_k12": _entry(_C10, 4.51, source="Huang et al. 2017, Table 2 (DenseNet-BC, L=100, k=12)",
                                 params=800_000),
    "dpn68": _entry(_IN, 23.57, 6.93, "Chen et al. 2017, authors' README (1 crop, 224)", gmacs=2.5),
    "dpn92": _entry(_IN, 20.73, 5.37, "Chen et al. 2017, Table 2 / authors' README (1 crop, 224)", gmacs=6.5),
    "dpn98": _entry(_IN, 20.15, 5.15, "Chen et al. 2017, Table 2 / authors' README (1 crop, 224)", gmacs=11.7),
    "dpn131": _entry(_IN, 19.93, 5.12, "Chen et al. 2017, Table 2 / authors' README (1 crop, 224)", gmacs=16.0),
    "airbench94": _entry(_C10, 5.99, source="Jordan 2024 (94% on CIFAR-10 in 3.29 s), airbench94.py: mean of "
                         "1,000 runs, ~10 epochs", note="flip + translate; multi-crop test-time augmentation"),
}
for _name in ("vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"):
    PUBLISHED[_name] = _entry(_IN, note="BatchNorm variant: not in the 2015 paper")
for _depth in (20, 32, 44, 56, 110, 1202):
    PUBLISHED[f"plain{_depth}_cifar"] = _entry(
        _C10, source=_HE16 + ", Fig. 6", note="plain nets: curves only (error grows with depth), no table figure")

COLUMNS = ("model", "family", "dataset", "input", "params", "MACs", "depth", "layers", "published_top1_error",
           "published_top5_error", "published_params", "published_gmacs", "source", "note", "seconds")


def family(name: str) -> str:
    """lenet, alexnet, vgg, googlenet, resnet, plain, preact_resnet, densenet, dpn, mlp..."""
    if name.startswith("preact_resnet"):
        return "preact_resnet"
    return re.match(r"[a-z]+", name).group()


def summarize_model(name: str) -> dict:
    """One table row: counted figures for `name` plus what its paper reports."""
    from cnnjax import models
    from cnnjax.summary import default_num_classes, summarize

    start = time.perf_counter()
    shape = models.canonical_input_shape(name)
    summary = summarize(models.get_model(name, default_num_classes(name)), shape)
    published = PUBLISHED.get(name, _entry("", note="not in the published-figures table"))
    return {"model": name, "family": family(name), "input": "x".join(map(str, shape)),
            "params": summary.total_params, "MACs": summary.total_macs, "depth": models.nominal_depth(name),
            "layers": summary.weight_layers, **published, "seconds": round(time.perf_counter() - start, 2)}


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    """Writes table.csv/md and architectures.png; returns {model: row}."""
    del data_path  # nothing is trained
    common.check_variant(variant)
    from cnnjax import models

    names = SMOKE_MODELS if variant == "smoke" else models.list_models()
    rows = [summarize_model(name) for name in names]
    rows.sort(key=lambda r: (r["dataset"], r["params"]))
    blank = [{k: "" if v is None else v for k, v in row.items()} for row in rows]
    common.write_table(workdir, blank, columns=COLUMNS,
                       title="Zoo: counted parameters / MACs (canonical input) next to published errors (%)")
    _plot(workdir, rows)
    return {row["model"]: row for row in rows}


def _plot(workdir: str, rows) -> str:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (("ImageNet", "published_top5_error", "top-5 error (%)", lambda r: "ImageNet" in r["dataset"]),
              ("CIFAR-10", "published_top1_error", "test error (%)", lambda r: r["dataset"].startswith("CIFAR")))
    for ax, (title, key, label, keep) in zip(axes, panels):
        points = [r for r in rows if keep(r) and r[key] is not None]
        families = sorted({r["family"] for r in points})
        for index, fam in enumerate(families):
            mine = [r for r in points if r["family"] == fam]
            ax.scatter([r["params"] for r in mine], [r[key] for r in mine], color=f"C{index}", label=fam, s=25)
            for r in mine:
                text = r["model"].replace("_cifar", "") + (" (2010 test)" if "2010" in r["dataset"] else "")
                ax.annotate(text, (r["params"], r[key]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (counted)")
        ax.set_ylabel(f"published {label}")
        ax.set_title(f"{title}: published error vs counted parameters", fontsize=10)
        if families:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no model of this data set in this variant", ha="center", transform=ax.transAxes)
    return common.save_figure(fig, workdir, "architectures.png")


if __name__ == "__main__":
    common.main(run)
