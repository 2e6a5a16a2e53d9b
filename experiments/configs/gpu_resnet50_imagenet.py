"""ResNet-50 on imagenet2012 on SLURM GPU nodes (recipe: `cluster_base.py`).

    launch/gpu_slurm.sh --nodes=4 --gpus-per-node=8 --time=3-00:00:00 \\
        --config=experiments/configs/gpu_resnet50_imagenet.py:nodes=4 --workdir=/shared/runs/r50 \\
        --setup='source .venv/bin/activate' --config.data.data_dir=/shared/tensorflow_datasets

Global batch 256 per node (32 per GPU on 8-GPU nodes), learning rate 0.1 per
256, 5 warmup epochs then cosine over 90 epochs, Nesterov momentum 0.9, L2
1e-4, bfloat16, streamed input. imagenet2012 must already be prepared in
`data.data_dir` (TFDS cannot download it), on a file system every node reads;
the workdir must be shared by all nodes too.

Variants: `nodes=N` (global batch 256 * N, learning rate 0.1 * N; give the same
N as `--nodes`), `batch=N` (any global batch, learning rate 0.1 * N / 256),
`smoke` (one epoch over 10,240 training images: checks the job's wiring in
minutes), combined with a comma (`:nodes=4,smoke`).
"""

from experiments.configs import cluster_base

BATCH_PER_NODE = 256


def get_config(arg: str | None = None):
    variants = cluster_base.parse_variants(arg, flags=("smoke",), numbers=("nodes", "batch"))
    if "nodes" in variants and "batch" in variants:
        raise ValueError("Give nodes=N or batch=N, not both (nodes=N means batch=256*N)")
    batch = variants.get("batch", BATCH_PER_NODE * variants.get("nodes", 1))
    return cluster_base.resnet50_imagenet(batch, smoke=variants.get("smoke", False))
