"""Streaming input throughput: images/s of the host pipeline (read, decode, crop, batch).

    python experiments/benchmarks/input_pipeline.py [--quick] [--data_path=ARCHIVE] [--out=FILE.json]
        [--bad_images=error|skip]

Reads the CIFAR-10 training JPEGs (`../shared/data/cifar10-train-jpg.tar.gz`, or
`--data_path`, a folder or archive laid out as `train/<class>/<image>`) through
`cnnjax.data.streaming`, as an image folder and as a TFDS set built locally from
`--tfds_examples` of the same JPEGs spread over all classes (bytes stored as they
are), and times:

* `train`: `train_stream` (shuffle, decode, random-resized crop, flip, batch) at
  `image_size` 224 (32x32 images upscaled: the decode is cheap, the resize and
  the batch bytes are ImageNet-sized) and 32;
* `train+device`: the same through `prefetch_to_device` onto the default JAX
  device, each batch waited for;
* `eval`: `eval_stream` (centre crop, masked batches), over the training split so
  that one pass outlasts the timed batches.

Each measurement is images per second over `--batches` batches of `--batch_size`
after `--warmup` batches (the tf.data autotuner settles in those), one process,
a fresh stream each time. The cases take turns for `--repeats` rounds and the
median is reported with the range, since on a shared machine the figures move
with the load (its load average is printed too). `--out` writes a JSON list of
records with keys `source`, `mode`, `image_size`, `batch_size`, `images_per_s`
(median), `runs` (every measurement), `load_avg`.
`--quick`: fewer batches and no TFDS build. `--bad_images` sets `data.bad_images`
(`skip` adds tf.data's `ignore_errors` and the check for dropped positions).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import tempfile
import time

import jax
import ml_collections
import numpy as np

from cnnjax.data import streaming
from experiments.common import CIFAR_ARCHIVE


def data_config(**values) -> ml_collections.ConfigDict:
    config = {
        "name": "image_folder",
        "path": None,
        "data_dir": None,
        "download": False,
        "train_split": None,
        "validation_split": None,
        "test_split": None,
        "max_train_examples": None,
        "max_eval_examples": None,
        "validation_fraction": 0.1,
        "test_fraction": 0.0,
        "preprocess": "standardize",
        "augment": {"flip": True, "crop_padding": 0},
        "image_size": 224,
        "shuffle_buffer": 10_000,
    }
    config.update(values)
    return ml_collections.ConfigDict(config)


def build_tfds(archive: str, data_dir: str, count: int) -> None:
    """Writes `cifar_jpeg_stream`: the first `count` train JPEGs of the archive, bytes unchanged."""
    import tensorflow_datasets as tfds

    with tarfile.open(archive, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        stride = max(1, len(members) // count)
        blobs = [(tar.extractfile(m).read(), m.name.split("/")[-2]) for m in members[::stride][:count]]
    classes = sorted({label for _, label in blobs})

    class CifarJpegStream(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "cifar_jpeg_stream"
        VERSION = tfds.core.Version("1.0.0")
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=classes),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (data, label) in enumerate(blobs):
                yield i, {"image": io.BytesIO(data), "label": label}

    CifarJpegStream(data_dir=data_dir).download_and_prepare()


def rate(batches, batch_size: int, warmup: int, count: int, wait=None) -> tuple[float, float]:
    """(images/s, seconds) over `count` batches after `warmup`."""
    for _ in range(warmup):
        batch = next(batches)
    if wait:
        wait(batch)
    start = time.perf_counter()
    for _ in range(count):
        batch = next(batches)
        if wait:
            wait(batch)
    seconds = time.perf_counter() - start
    return batch_size * count / seconds, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", default=str(CIFAR_ARCHIVE))
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--tfds_examples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--bad_images", default="error", choices=("error", "skip"))
    args = parser.parse_args()
    if args.quick:
        args.batches, args.warmup, args.repeats = 10, 3, 1
    scratch = tempfile.TemporaryDirectory(prefix="cnnjax-input-pipeline-")  # removed at exit
    os.environ.setdefault("CNNJAX_CACHE_DIR", os.path.join(scratch.name, "cache"))

    configs = {"folder": lambda size: data_config(path=args.data_path, image_size=size, bad_images=args.bad_images)}
    start = time.perf_counter()
    info = streaming.streaming_info(configs["folder"](224))
    print(f"image folder {args.data_path}: {info.num_train_examples} train / {info.num_eval_examples['validation']} "
          f"validation images, listing + statistics {time.perf_counter() - start:.1f} s "
          f"(a compressed archive is decompressed once into {os.environ['CNNJAX_CACHE_DIR']})")
    if not args.quick:
        tfds_dir = os.path.join(scratch.name, "tfds")
        start = time.perf_counter()
        build_tfds(args.data_path, tfds_dir, args.tfds_examples)
        print(f"TFDS set of {args.tfds_examples} JPEGs built in {time.perf_counter() - start:.1f} s")
        configs["tfds"] = lambda size: data_config(
            name="cifar_jpeg_stream", data_dir=tfds_dir, image_size=size, train_split="train",
            validation_split="train[90%:]", test_split="train[90%:]", bad_images=args.bad_images)

    device = jax.devices()[0]
    print(f"{os.cpu_count()} CPUs, JAX device {device.platform}; batch {args.batch_size}, "
          f"{args.batches} batches after {args.warmup}, {args.repeats} rounds")
    cases = [(source, size, mode) for source in configs for size in (224, 32)
             for mode in ("train", "train+device", "eval")]
    runs = {case: [] for case in cases}
    loads = []
    for round_index in range(args.repeats):
        for source, size, mode in cases:
            batches, wait = stream(mode, configs[source](size), args.batch_size)
            runs[(source, size, mode)].append(rate(batches, args.batch_size, args.warmup, args.batches, wait)[0])
            loads.append(os.getloadavg()[0])
        print(f"round {round_index + 1}/{args.repeats} done (load average {loads[-1]:.1f})", flush=True)
    records = []
    for (source, size, mode), values in runs.items():
        median = float(np.median(values))
        records.append({"source": source, "mode": mode, "image_size": size, "batch_size": args.batch_size,
                        "images_per_s": median, "runs": values, "load_avg": [min(loads), max(loads)]})
        print(f"{source:7s} {mode:13s} {size:4d}px {median:9.0f} images/s (runs {min(values):.0f}-{max(values):.0f})")
    print(f"load average during the runs: {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)


def stream(mode: str, config, batch_size: int):
    """(batches, wait) for one timed mode; `wait` blocks on a device batch."""
    if mode == "eval":
        return _eval_passes(config, batch_size), None
    batches = streaming.train_stream(config, global_batch_size=batch_size, seed=0, process_index=0, process_count=1)
    if mode == "train+device":
        return streaming.prefetch_to_device(batches, 2), jax.block_until_ready
    return batches, None


def _eval_passes(config, batch_size: int):
    """Evaluation passes one after another, so a short split still fills the timed batches."""
    while True:
        yield from streaming.eval_stream(config, "train", global_batch_size=batch_size, process_index=0,
                                         process_count=1)


if __name__ == "__main__":
    main()
