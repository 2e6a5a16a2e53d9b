"""--mode=export: a fresh process with only jax and numpy reproduces the model's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cnnjax.inference.export_model import export_run
from cnnjax.inference.restore import InferenceError, restore_run
from cnnjax.inference.run_config import read_run_config
from tests.inference.conftest import cli, cli_env, snapshot

CONSUMER = textwrap.dedent("""
    import sys
    import numpy as np
    from cnnjax.export import load
    model = load(sys.argv[1])
    logits = [model(np.load(sys.argv[2])[:n]) for n in (1, 5, 33)]
    assert "flax" not in sys.modules and "cnnjax.models" not in sys.modules, sorted(sys.modules)
    assert not [m for m in sys.modules if m.startswith("cnnjax.") and m != "cnnjax.export"]
    np.save(sys.argv[3], logits[2])
    print(model.class_names[int(logits[0][0].argmax())], [x.shape for x in logits])
""")


def test_exported_logits_equal_the_models_in_a_process_without_flax(trained_run, tmp_path):
    workdir = trained_run[0]
    before = snapshot(workdir)
    meta = export_run(workdir, read_run_config(workdir), str(tmp_path / "export"))
    assert snapshot(workdir) == before
    assert meta["input"]["dtype"] == "uint8" and meta["class_names"] == [str(i) for i in range(10)]
    images = np.random.default_rng(0).integers(0, 256, (33, 28, 28, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", CONSUMER, str(tmp_path / "export"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, env=cli_env(), timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[(1, 10), (5, 10), (33, 10)]" in result.stdout
    expected = restore_run(workdir).predict_logits(images, 11)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_export_to_a_file_path_is_refused(trained_run, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InferenceError, match="is a file"):
        export_run(trained_run[0], read_run_config(trained_run[0]), str(tmp_path / "f"))


def test_cli_export_and_a_bad_step(trained_run, tmp_path):
    steps = trained_run[1]["steps"]
    result = subprocess.run(cli("--mode=export", f"--workdir={trained_run[0]}", f"--export_dir={tmp_path / 'e'}",
                                "--checkpoint_step=999"), capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 2
    assert f"available steps: {steps}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "e").exists()
    result = subprocess.run(cli("--mode=export", f"--workdir={trained_run[0]}", f"--export_dir={tmp_path / 'e'}"),
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "e" / "metadata.json").read_text())["checkpoint_step"] == steps
    assert os.path.exists(tmp_path / "e" / "model.jaxexport")


@pytest.mark.slow
def test_a_batchnorm_resnet_exports_with_a_symbolic_batch(tmp_path):
    from cnnjax.export import load
    from experiments.benchmarks.predict_throughput import make_untrained_run

    workdir = str(tmp_path / "run")
    make_untrained_run(workdir, "resnet20_cifar", num_classes=12)
    export_run(workdir, read_run_config(workdir), str(tmp_path / "export"))
    model = load(str(tmp_path / "export"))
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = restore_run(workdir).predict_logits(images, 3)
    np.testing.assert_allclose(model(images), expected, rtol=1e-4, atol=1e-5)
    assert model.class_names == tuple(f"class{i}" for i in range(12))
