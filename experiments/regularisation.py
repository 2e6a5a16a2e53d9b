"""Regularisers on a small training set: none vs L1 vs L2 vs dropout vs batch norm.

    python -m experiments.regularisation --workdir=/tmp/exp/regularisation [--variant=smoke|full]

LeNet-5 on a few CIFAR-10 training images for many epochs (recipe in
`experiments/configs/regularisation.py`), so the unregularised net overfits.
Reports for each regulariser the training accuracy (last logging window, in
training mode: with dropout active it understates the clean training
accuracy), the final and best val accuracy and the train - val GAP. Writes
`table.csv`/`table.md` and `regularisation.png` (train/val bars and the gap).
"""

from __future__ import annotations

from experiments import common
from experiments import variants as variants_lib


def regularisers(exp) -> dict[str, dict]:
    return {
        "none": {},
        "L1": {"loss.l1": exp.l1},
        "L2": {"loss.l2": exp.l2},
        "dropout": {"model.dropout_rate": exp.dropout_rate},
        "BN": {"model.batch_norm": True},
    }


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    from experiments.configs.regularisation import get_config

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    dataset = variants_lib.subset_train(dataset, exp.small_train_examples, config.data.preprocess)
    settings = regularisers(exp)
    runs = variants_lib.train(config, settings, exp.seeds, dataset=dataset)
    rows = [variants_lib.summary_row(label, records, setting=", ".join(f"{k}={v}" for k, v in settings[label].items())
                                     or "-") for label, records in runs.items()]
    what = (f"LeNet-5, {dataset.train.num_examples} CIFAR-10 training images, "
            f"{rows[0]['steps']} steps, {len(exp.seeds)} seed(s)")
    return variants_lib.report(workdir, rows, runs, variant=variant, what=what, name="regularisation",
                               heading="Regularisers",
                               metrics=(("train_accuracy", "train"), ("val_accuracy", "val"), ("gap", "gap")))


if __name__ == "__main__":
    common.main(run)
