"""ResNet-20 on CIFAR-10 on SLURM GPU nodes (He et al. 2016 recipe).

    launch/gpu_slurm.sh --nodes=2 --gpus-per-node=4 \\
        --config=experiments/configs/gpu_resnet20_cifar10.py --workdir=/shared/runs/r20 \\
        --setup='source .venv/bin/activate' --config.data.data_dir=/shared/tensorflow_datasets

The recipe of `resnet20_cifar10.py` unchanged (batch 128, SGD momentum 0.9, lr
0.1, L2 1e-4, lr /10 at epochs 91 and 136 of 182 on the 45k training images,
i.e. 32k and 48k of 64k iterations; 4-pixel crop and flip), with the batch split
over every GPU of every node, in float32 as in the paper (a 0.27M-parameter
network gains little from bfloat16). The global batch must divide evenly over
the GPUs (128 does for 1, 2, 4, ..., 128 of them).

Variants: `smoke` (a few steps on 512 images: checks the job's wiring),
`plain` (plain-20, no shortcuts), combined with a comma.
"""

from experiments.configs import cluster_base


def get_config(arg: str | None = None):
    return cluster_base.resnet20_cifar10(arg, precision="float32")
