"""Workdirs in a bucket: the file layer, a run and a sweep on a local GCS emulator, killed and resumed.

The emulator (`gcp-storage-emulator`, in the `test` extra, wrapped by
`gcs_emulator.py`) runs in memory in a subprocess; `STORAGE_EMULATOR_HOST` points cnnjax (gcsfs, orbax's tensorstore,
TensorBoard's google-cloud-storage) at it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from cnnjax.training import files
from cnnjax.training.files import atomic_write
from cnnjax.training.writers import MetricWriter, read_metrics, rewrite_metrics, write_json

pytest.importorskip("gcp_storage_emulator")
# Read when gcsfs is imported: an emulator cannot answer gcsfs's question about a bucket's layout.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
pytest.importorskip("gcsfs")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "cnnjax-test"
# Figures that measure the machine, not the run.
TIMING_KEYS = ("train/steps_per_sec", "train/examples_per_sec", "wall_time_s", "compile_s", "step_ms")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deny_writes(tmp_path_factory):
    """A path: while a file exists there, the emulator answers every write with 403 Forbidden."""
    return tmp_path_factory.mktemp("emulator") / "deny-writes"


@pytest.fixture(scope="module")
def emulator(deny_writes):
    """The emulator's URL, with this process's environment pointed at it for the module's tests."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # gcs_emulator.py: the emulator with the object generations tensorstore needs (see there).
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "gcs_emulator.py"), "start",
                             "--port", str(port), "--in-memory", "--default-bucket", BUCKET, "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, GCS_EMULATOR_DENY_WRITES=str(deny_writes)))
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the GCS emulator did not start")
            time.sleep(0.1)
    names = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
             "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url})
    files.prepare_remote()
    yield url
    proc.kill()
    proc.wait()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _bucket_url(name: str) -> str:
    return f"gs://{BUCKET}/{name}-{time.time_ns()}"


# -- the file layer ----------------------------------------------------------


def test_whole_files_and_the_metric_log_in_a_bucket(emulator):
    workdir = _bucket_url("files")
    path = f"{workdir}/summary.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path) as f:
            f.write('{"a": 2, "b"')
            raise RuntimeError("killed")
    assert json.loads(files.read_text(path)) == {"a": 1}, "a failed write leaves the old object"
    with atomic_write(f"{workdir}/results.csv", newline="") as f:
        f.write("member,acc\r\n0,0.5\r\n")
    assert files.read_bytes(f"{workdir}/results.csv") == b"member,acc\r\n0,0.5\r\n"

    writer = MetricWriter(workdir, tensorboard=False)
    writer.write(1, {"train/loss": 2.0})
    writer.write(2, {"train/loss": float("nan")})
    assert read_metrics(workdir) == [], "records wait in memory until a flush"
    writer.flush()
    writer.write(3, {"train/loss": 1.0})
    writer.close()
    expected = [{"step": 1, "train/loss": 2.0}, {"step": 2, "train/loss": "nan"}, {"step": 3, "train/loss": 1.0}]
    assert read_metrics(workdir) == expected
    # A writer killed between uploading an appended part and composing it: the log is whole, the part goes.
    stray = f"{workdir}/.metrics.jsonl.part-deadbeef"
    with atomic_write(stray) as f:
        f.write('{"step": 4, "train/loss": 0.5}\n')
    writer = MetricWriter(workdir, tensorboard=False)
    writer.close()
    assert not files.exists(stray) and read_metrics(workdir) == expected
    rewrite_metrics(workdir, lambda r: r["step"] <= 2)
    assert read_metrics(workdir) == expected[:2]
    assert sorted(files.listdir(workdir)) == ["metrics.jsonl", "results.csv", "summary.json"]
    files.rmtree(workdir)
    assert not files.exists(f"{workdir}/summary.json")


def test_a_checkpoint_save_cut_short_in_a_bucket_is_ignored_then_redone(emulator):
    """In a bucket orbax writes a step in place and marks it complete last; an unmarked step is a killed save."""
    import fsspec

    from cnnjax.training.checkpoint import Checkpointer

    workdir = _bucket_url("ckpt")
    checkpointer = Checkpointer(workdir)
    checkpointer.save({"w": np.arange(4.0)}, step=1)
    checkpointer.save({"w": np.arange(4.0) * 2}, step=2)
    checkpointer.close()
    # Killed before the markers: the arrays and their manifest written, nothing marked complete.
    fs = fsspec.filesystem("gs")
    fs.rm([f"{workdir}/checkpoints/2/commit_success.txt", f"{workdir}/checkpoints/2/default/commit_success.txt"])
    checkpointer = Checkpointer(workdir)
    assert checkpointer.all_steps() == [1]
    np.testing.assert_array_equal(checkpointer.restore({"w": np.zeros(4)})["w"], np.arange(4.0))
    checkpointer.save({"w": np.arange(4.0) * 3}, step=2)  # the same step again, over the remains
    checkpointer.close()
    checkpointer = Checkpointer(workdir)
    assert checkpointer.all_steps() == [1, 2]
    np.testing.assert_array_equal(checkpointer.restore({"w": np.zeros(4)})["w"], np.arange(4.0) * 3)
    checkpointer.close()


def test_a_local_workdir_is_untouched_by_the_layer(tmp_path):
    """Local paths keep the os code path: files appear as they are written, no bucket involved."""
    workdir = str(tmp_path)
    writer = MetricWriter(workdir, tensorboard=False)
    writer.write(1, {"train/loss": 2.0})
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "train/loss": 2.0}\n'
    writer.close()
    assert files.absolute("rel") == os.path.abspath("rel") and files.absolute("gs://b/x") == "gs://b/x"


# -- bad workdirs --------------------------------------------------------------


def _cli(workdir, *extra):
    return [sys.executable, "-m", "cnnjax.main", f"--config={ROOT}/experiments/configs/default.py:smoke",
            f"--workdir={workdir}", "--config.progress_bar=False", *extra]


def _env(emulator_url):
    return dict(os.environ, PYTHONPATH=ROOT, STORAGE_EMULATOR_HOST=emulator_url,
                TENSORSTORE_GCS_HTTP_URL=emulator_url, PYTHONUNBUFFERED="1")


@pytest.mark.parametrize("workdir, emulator_url, message", [
    ("gs://", None, "names no bucket; write gs://BUCKET/PATH"),
    ("gs:///runs/a", None, "names no bucket"),
    ("gs://Not_A_Bucket!/a", None, "is not a valid bucket name"),
    ("s3://bucket/a", None, "s3:// is not supported; name a local directory or gs://BUCKET/PATH"),
    (f"gs://{BUCKET}/a", "http://127.0.0.1:1", "cannot reach STORAGE_EMULATOR_HOST at 127.0.0.1:1"),
    ("gs://no-such-bucket/a", None, "the bucket 'no-such-bucket' does not exist"),
])
def test_bad_bucket_workdirs_exit_2_before_any_compile(emulator, tmp_path, workdir, emulator_url, message):
    result = subprocess.run(_cli(workdir, f"--config.data.data_dir={tmp_path / 'tfds'}"), capture_output=True,
                            text=True, env=_env(emulator_url or emulator), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tfds").exists(), "refused before the data set was touched"


# -- a run and a sweep, killed and resumed --------------------------------------


def _kill_when(command, env, ready, timeout=600):
    """Starts `command` and SIGKILLs it once `ready()` holds; returns (return code, output)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _run(command, env):
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _checkpoint_arrays(workdir):
    """Orbax step -> the array leaves of each item, of every checkpoint kept (local or in a bucket)."""
    import jax
    import orbax.checkpoint as ocp

    from cnnjax.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(workdir)
    out = {}
    for step in checkpointer.all_steps():
        if files.exists(f"{workdir}/checkpoints/{step}/state"):  # a sweep's: arrays and records
            tree = checkpointer._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
            tree = tree["state"]
        else:  # a single run's
            tree = checkpointer._manager.restore(step, args=ocp.args.StandardRestore())
        out[step] = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
    checkpointer.close()
    return out


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.startswith("time/")} for r in records]


def _assert_same_workdir(local, remote, names):
    ref, res = _checkpoint_arrays(local), _checkpoint_arrays(remote)
    assert ref and set(ref) <= set(res), (sorted(ref), sorted(res))
    for step, leaves in ref.items():
        assert len(leaves) == len(res[step])
        for a, b in zip(leaves, res[step]):
            np.testing.assert_array_equal(a, b, err_msg=f"checkpoint {step}")
    assert _without_timing(read_metrics(remote)) == _without_timing(read_metrics(local))
    for name in names:
        a, b = files.read_text(os.path.join(local, name)), files.read_text(f"{remote}/{name}")
        if name.endswith(".json"):
            a, b = json.loads(a), json.loads(b)
            if isinstance(a, dict) and "wall_time_s" in a:
                a, b = _without_timing([a])[0], _without_timing([b])[0]
        assert a == b, name


@pytest.mark.slow
def test_killed_run_in_a_bucket_resumes_to_the_local_result(emulator, tmp_path):
    data = [f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.checkpoint_every_steps=2",
            "--config.log_every_steps=1"]
    env = _env(emulator)
    local = str(tmp_path / "local")
    _run(_cli(local, *data), env)
    remote = _bucket_url("run")
    code, out = _kill_when(_cli(remote, *data), env,
                           lambda: files.exists(f"{remote}/checkpoints/4/commit_success.txt"))
    assert code == -signal.SIGKILL, out[-3000:]
    out = _run(_cli(remote, *data), env)
    assert "Resuming from step" in out
    _assert_same_workdir(local, remote, ["config.json", "summary.json", "data_info.json"])
    assert any(n.startswith("events.out.tfevents.") for n in files.listdir(remote)), "TensorBoard events too"
    # The run in the bucket serves eval, predict and export like the local one.
    mode = [sys.executable, "-m", "cnnjax.main"]
    _run([*mode, "--mode=eval", f"--workdir={remote}", data[0]], env)
    summary = json.loads(files.read_text(f"{remote}/summary.json"))
    assert json.loads(files.read_text(f"{remote}/eval.json"))["accuracy"] == summary["eval/accuracy"]
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (28, 28), np.uint8)).save(images / f"{i}.png")
    for workdir in (local, remote):
        _run([*mode, "--mode=predict", f"--workdir={workdir}", f"--images={images}"], env)
        export = tmp_path / f"export-{workdir == remote}"
        _run([*mode, "--mode=export", f"--workdir={workdir}", f"--export_dir={export}"], env)
    assert files.read_bytes(f"{remote}/predictions.csv") == files.read_bytes(f"{local}/predictions.csv")
    exported = [json.loads((tmp_path / f"export-{r}" / "metadata.json").read_text()) for r in (False, True)]
    assert exported[1].pop("source_workdir") == remote and exported[0].pop("source_workdir") == local
    assert exported[1] == exported[0]


@pytest.mark.slow  # ~100 s on the shared 2-core machine: a run stopped half-way, then resumed
def test_a_bucket_that_stops_taking_writes_stops_the_run_cleanly_and_it_resumes(emulator, deny_writes, tmp_path):
    """Writes refused mid-run (403, as when write permission is lost): exit 2 with one message naming the
    workdir and the failed write; the complete checkpoints stay, and the same command resumes once writes work."""
    from cnnjax.training.checkpoint import Checkpointer

    # 64 steps (512 examples, batch 8), a checkpoint every 4: writes are refused from after the second.
    command = _cli(_bucket_url("denied"), f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.batch_size=8",
                   "--config.checkpoint_every_steps=4", "--config.log_every_steps=1")
    remote = command[4].split("=", 1)[1]
    env = _env(emulator)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            if files.exists(f"{remote}/checkpoints/8/commit_success.txt"):
                deny_writes.touch()
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=600)
    finally:
        denied = deny_writes.exists()
        deny_writes.unlink(missing_ok=True)
    assert denied, "the run ended before its writes were refused: " + err[-2000:]
    assert proc.returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [err.strip().splitlines()[-1]], err[-3000:]
    # The refused write is gcsfs's (403 Forbidden) or orbax's tensorstore's (PERMISSION_DENIED), whichever came first.
    assert errors[0].startswith(f"error: cannot write to '{remote}' any more (")
    assert "Forbidden" in errors[0] or "PERMISSION_DENIED" in errors[0], errors[0]
    assert "run the same command again to resume" in errors[0]
    checkpointer = Checkpointer(remote)
    kept = checkpointer.all_steps()
    checkpointer.close()
    assert 8 in kept and max(kept) < 64, kept

    out = _run(command, env)
    assert f"Resuming from step {max(kept)} of 64" in out
    summary = json.loads(files.read_text(f"{remote}/summary.json"))
    assert summary["status"] == "completed" and summary["steps"] == 64
    steps = [r["step"] for r in read_metrics(remote) if "train/loss" in r]
    assert steps == list(range(1, 65)), "every step logged once after the resume"


def _sweep_cli(workdir, *extra):
    return [sys.executable, "-m", "cnnjax.main", "--mode=sweep",
            f"--config={ROOT}/experiments/configs/sweep_lr_wd.py:smoke", f"--workdir={workdir}",
            "--config.progress_bar=False", "--config.sweep.plan=vmap", "--config.checkpoint_every_steps=3",
            "--config.keep_checkpoints=100", *extra]


@pytest.mark.slow
def test_killed_sweep_in_a_bucket_resumes_to_the_local_result(emulator, tmp_path):
    data = [f"--config.data.data_dir={tmp_path / 'tfds'}"]
    env = _env(emulator)
    local = str(tmp_path / "local")
    _run(_sweep_cli(local, *data), env)
    remote = _bucket_url("sweep")
    storage = f"--config.sweep.storage=journal:{tmp_path / 'study.log'}"  # SQLite cannot live in a bucket
    code, out = _kill_when(_sweep_cli(remote, storage, *data), env,
                           lambda: files.exists(f"{remote}/checkpoints/3000/commit_success.txt"))
    assert code == -signal.SIGKILL, out[-3000:]
    out = _run(_sweep_cli(remote, storage, *data), env)
    assert "Resuming the sweep at phase 0" in out
    _assert_same_workdir(local, remote, ["results.csv", "results.json"])
    names = set(files.listdir(remote))
    assert {"loss_curves.png", "summary.json", "tensorboard", "best"} <= names, names
