"""ResNet-20 on CIFAR-10 on a Cloud TPU VM or pod slice (He et al. 2016 recipe).

    launch/tpu_vm.sh all --name=r20 --zone=us-central2-b --accelerator-type=v4-8 \\
        --config=experiments/configs/tpu_resnet20_cifar10.py --workdir=/tmp/r20 \\
        --config.data.download=True

The recipe of `resnet20_cifar10.py` unchanged (batch 128, SGD momentum 0.9, lr
0.1, L2 1e-4, lr /10 at epochs 91 and 136 of 182 on the 45k training images,
i.e. 32k and 48k of 64k iterations; 4-pixel crop and flip), with the batch split
over every TPU core of every worker and bfloat16 compute, the TPU's native
matmul precision. On a pod slice give a workdir every worker can write.

Variants: `smoke` (a few steps on 512 images: checks the slice's wiring),
`plain` (plain-20, no shortcuts), combined with a comma.
"""

from experiments.configs import cluster_base


def get_config(arg: str | None = None):
    return cluster_base.resnet20_cifar10(arg, precision="bfloat16")
