"""Max vs average vs stochastic pooling (Zeiler & Fergus 2013).

    python -m experiments.pooling --workdir=/tmp/exp/pooling [--variant=smoke|full]

LeNet-5 on CIFAR-10 with each pooling kind in both pooling layers (recipe in
`experiments/configs/lenet_cifar.py`). Stochastic pooling samples one activation
per window with probability proportional to it while training and takes the
probability-weighted average at test time. Writes `table.csv`/`table.md`
(seed-averaged train accuracy, final and best val accuracy, train - val gap)
and `pooling.png` (bars).
"""

from __future__ import annotations

from experiments import common
from experiments import variants as variants_lib


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    from experiments.configs.pooling import get_config

    config, exp, dataset = common.prepare(get_config, variant, data_path)
    runs = variants_lib.train(config, {p: {"model.pooling": p} for p in exp.poolings}, exp.seeds, dataset=dataset)
    rows = [variants_lib.summary_row(label, records) for label, records in runs.items()]
    what = (f"LeNet-5, CIFAR-10 ({dataset.train.num_examples} training images), "
            f"{rows[0]['steps']} steps, {len(exp.seeds)} seed(s)")
    return variants_lib.report(workdir, rows, runs, variant=variant, what=what, name="pooling",
                               heading="Pooling in LeNet-5")


if __name__ == "__main__":
    common.main(run)
