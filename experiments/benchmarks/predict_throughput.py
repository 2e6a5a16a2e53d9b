"""Throughput of `--mode=predict` (images/s), by model, on 32x32 RGB PNGs.

    python experiments/benchmarks/predict_throughput.py [--models=lenet5,resnet20_cifar] [--images=2000]

For each model: a workdir holding a freshly initialised checkpoint (the weights
do not change the cost), a folder of random 32x32 PNGs, then `predict_run` timed
twice: the whole call (restore, decode, resize check, normalise, forward
passes of 4 batches a call overlapping the decoding, CSV) and the forward passes
alone on the decoded arrays (`RestoredRun.predict_logits`). The first call of
each warms up (compiles) and is not timed; the timed `predict_run` restores the
run again, as a command would. Prints a table of images/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import jax
import numpy as np

from cnnjax.config import base_config
from cnnjax.inference.predict import predict_run
from cnnjax.inference.restore import restore_run
from cnnjax.inference.run_config import read_run_config
from cnnjax.training.checkpoint import Checkpointer
from cnnjax.training.optim import optimizer_from_config
from cnnjax.training.run_data import DATA_INFO, data_info
from cnnjax.training.state import create_train_state
from cnnjax.training.train import build_model
from cnnjax.training.writers import write_json


def make_untrained_run(workdir: str, model_name: str, image_shape=(32, 32, 3), num_classes: int = 10,
                       seed: int = 0) -> None:
    """A workdir like a finished run's (config.json, data_info.json, one checkpoint) with initial weights."""
    config = base_config()
    config.model.name = model_name
    config.data.name = "cifar10"
    state = create_train_state(build_model(config, num_classes), optimizer_from_config(config, 1, 1),
                               jax.random.PRNGKey(seed), tuple(image_shape))
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    channels = image_shape[-1]
    write_json(os.path.join(workdir, DATA_INFO), data_info(
        "cifar10", [f"class{i}" for i in range(num_classes)], image_shape,
        np.full((1, 1, channels), 0.45), np.full((1, 1, channels), 0.25)))
    checkpointer = Checkpointer(workdir)
    checkpointer.save(state.replace(step=state.step + 1))
    checkpointer.close()


def _png_folder(root: str, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(os.path.join(root, f"{i:05d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet20_cifar")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "images")
        _png_folder(folder, args.images)
        images = np.random.default_rng(1).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
        print(f"device: {jax.devices()[0].device_kind}, {args.images} images of 32x32x3, batch {args.batch_size}")
        print(f"{'model':<10} {'predict (whole) img/s':>22} {'forward only img/s':>20}")
        for name in args.models.split(","):
            workdir = os.path.join(tmp, name)
            make_untrained_run(workdir, name)
            config = read_run_config(workdir)
            config.eval_batch_size = args.batch_size
            out = os.path.join(tmp, f"{name}.csv")
            predict_run(workdir, config, folder, out)  # compiles
            start = time.perf_counter()
            predict_run(workdir, config, folder, out)
            whole = args.images / (time.perf_counter() - start)
            run = restore_run(workdir, config)
            run.predict_logits(images, args.batch_size)  # compiles (the program takes several batches a call)
            start = time.perf_counter()
            run.predict_logits(images, args.batch_size)
            forward = args.images / (time.perf_counter() - start)
            print(f"{name:<10} {whole:>22.0f} {forward:>20.0f}")


if __name__ == "__main__":
    main()
