"""ResNet-50 on imagenet2012 on a Cloud TPU pod slice (recipe: `cluster_base.py`).

    launch/tpu_vm.sh all --name=r50 --zone=us-central2-b --accelerator-type=v4-32 \\
        --config=experiments/configs/tpu_resnet50_imagenet.py --workdir=/mnt/runs/r50 \\
        --config.data.data_dir=gs://BUCKET/tensorflow_datasets

Global batch 1024 (64 per chip on a v4-32's 16 chips), learning rate 0.4
(0.1 per 256), 5 warmup epochs then cosine over 90 epochs, Nesterov momentum
0.9, L2 1e-4, bfloat16, streamed input. imagenet2012 must already be prepared
in `data.data_dir` (TFDS cannot download it). The workdir must be a directory
that every worker can write (cnnjax writes it with ordinary file I/O).

Variants: `batch=N` (global batch N, learning rate 0.1 * N / 256), `smoke`
(one epoch over 10,240 training images: checks the slice's wiring in minutes),
combined with a comma (`:batch=2048,smoke`).
"""

from experiments.configs import cluster_base

DEFAULT_BATCH = 1024


def get_config(arg: str | None = None):
    variants = cluster_base.parse_variants(arg, flags=("smoke",), numbers=("batch",))
    return cluster_base.resnet50_imagenet(variants.get("batch", DEFAULT_BATCH), smoke=variants.get("smoke", False))
