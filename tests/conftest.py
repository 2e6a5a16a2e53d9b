"""Fixtures shared by every test directory: configs, the CLI, checkpoints, images, trees.

Test modules cannot import a conftest, so each helper is a fixture that returns
a function.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
# Every test compiles afresh (and writes no cache into the home directory);
# tests/test_compile_cache.py turns the cache on where it is the subject.
os.environ["CNNJAX_COMPILATION_CACHE"] = "off"


def _load_config(name: str = "default", arg: str | None = None):
    """`get_config(arg)` of `experiments/configs/<name>.py`."""
    name = name.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(f"cnnjax_test_cfg_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.fixture(scope="session")
def load_config():
    """`load_config(name="default", arg=None)`: an experiment config by file name."""
    return _load_config


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def subprocess_env():
    """The environment for a subprocess that must import this checkout's `cnnjax`."""
    return _subprocess_env()


@pytest.fixture(scope="session")
def run_cli():
    """`run_cli(*args, timeout=300)`: `python -m cnnjax.main ARGS`, output captured as text."""

    def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnnjax.main", *args], capture_output=True, text=True,
                              env=_subprocess_env(), timeout=timeout)

    return run


def _restore(workdir, target, step: int | None = None):
    from cnnjax.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(str(workdir))
    try:
        return checkpointer.restore(target, step)
    finally:
        checkpointer.close()


@pytest.fixture(scope="session")
def restore_checkpoint():
    """`restore_checkpoint(workdir, target, step=None)`: the checkpoint of `workdir` in `target`'s structure."""
    return _restore


def _assert_trees_equal(actual, expected, *, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Same leaf paths first (a missing or extra leaf fails), then every leaf (bitwise by default).

    Paths, not treedefs: a state's static fields (its apply function) differ between two builds.
    """
    import jax

    actual_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(actual)]
    expected_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(expected)]
    assert actual_paths == expected_paths, (
        f"tree structures differ: only in actual {sorted(set(actual_paths) - set(expected_paths))}, "
        f"only in expected {sorted(set(expected_paths) - set(actual_paths))}"
    )
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{jax.tree_util.keystr(path)}: {a.shape} vs {b.shape}"
        if rtol or atol:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))
        else:
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="session")
def assert_trees_equal():
    """`assert_trees_equal(a, b, rtol=0, atol=0)`: structure, then leaves (bitwise unless tolerances)."""
    return _assert_trees_equal


def _write_image_folder(root: Path, *, classes: int = 2, per_class: int = 12, size: int = 28, channels: int = 1,
                        fmt: str = "png", seed: int = 0) -> list[str]:
    """Writes `root/train/<class>/<i>.<fmt>`: each class a distinct mean image plus noise.

    Returns the relative paths written.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = []
    for c in range(classes):
        centre = rng.integers(30, 225, size=(size, size, channels))
        for i in range(per_class):
            pixels = np.clip(centre + rng.normal(0, 20, centre.shape), 0, 255).astype(np.uint8)
            relpath = f"train/class{c}/{i:03d}.{fmt}"
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(root / relpath)
            written.append(relpath)
    return written


def _write_two_class_jpegs(root: Path) -> str:
    """Two classes of noisy JPEGs (dark / light), 40x48 pixels, 32 train and 8 test images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        for split, count in (("train", 32), ("test", 8)):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.normal(60 + 130 * label, 30, (40, 48, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.jpg")
    return str(root)


@pytest.fixture(scope="session")
def write_two_class_jpegs():
    """`write_two_class_jpegs(root) -> str(root)`: a learnable two-class JPEG folder (train and test)."""
    return _write_two_class_jpegs


@pytest.fixture(scope="session")
def write_image_folder():
    """`write_image_folder(root, classes=2, per_class=12, size=28, channels=1, fmt='png')` -> relpaths."""
    return _write_image_folder


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_cifar10: needs the CIFAR-10 JPEG archive; skipped where it is missing, failed on CI"
    )


def pytest_runtest_setup(item):
    """A missing CIFAR-10 archive skips `needs_cifar10` tests, but fails them when CI=true (CI always has it)."""
    if item.get_closest_marker("needs_cifar10") is None:
        return
    from experiments import common

    if common.CIFAR_ARCHIVE.exists():
        return
    message = f"the CIFAR-10 archive {common.CIFAR_ARCHIVE} is missing"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true, and CI always has it)", pytrace=False)
    pytest.skip(message)
