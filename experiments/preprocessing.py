"""Input preprocessing: none vs channel mean vs mean image vs standardise (cs231n notes).

    python -m experiments.preprocessing --workdir=/tmp/exp/preprocessing [--variant=smoke|full]

LeNet-5 on CIFAR-10 (recipe in `experiments/configs/lenet_cifar.py`) with each
`data.preprocess` choice. The images are read once; each choice's statistics
come from `cnnjax.data.compute_preprocess_stats` on the training split, exactly
what `load_dataset` computes for that choice. Each choice is its own population
(the statistics are constants of the compiled step). Writes `table.csv`/`table.md`
(with the input statistics each choice produces) and `preprocessing.png`.
"""

from __future__ import annotations

import dataclasses

from experiments import common
from experiments import variants as variants_lib


def with_preprocess(dataset, method: str):
    """`dataset` normalised by `method`'s statistics of its training split."""
    from cnnjax.data import compute_preprocess_stats

    mean, std = compute_preprocess_stats(dataset.train.images, method)
    return dataclasses.replace(dataset, mean=mean, std=std)


def input_stats(dataset) -> dict[str, float]:
    """Mean and std of the normalised training inputs (what the first layer sees)."""
    import numpy as np

    x = (dataset.train.images.astype(np.float32) / 255.0 - dataset.mean) / dataset.std
    return {"input_mean": float(x.mean()), "input_std": float(x.std())}


def run(workdir: str, variant: str = "smoke", data_path: str | None = None) -> dict:
    from experiments.configs.preprocessing import get_config

    config, exp, base = common.prepare(get_config, variant, data_path)
    rows, runs = [], {}
    for method in exp.preprocess:
        dataset = with_preprocess(base, method)
        config.data.preprocess = method  # recorded with the run; the statistics are in `dataset`
        runs[method] = variants_lib.train(config, {method: {}}, exp.seeds, dataset=dataset)[method]
        rows.append(variants_lib.summary_row(method, runs[method], **input_stats(dataset)))
    what = (f"LeNet-5, CIFAR-10 ({base.train.num_examples} training images), "
            f"{rows[0]['steps']} steps, {len(exp.seeds)} seed(s)")
    return variants_lib.report(workdir, rows, runs, variant=variant, what=what, name="preprocessing",
                               heading="Preprocessing")


if __name__ == "__main__":
    common.main(run)
