"""The launchers in `launch/`: exact dry-run commands, usage errors, and runs against stand-in
`gcloud`, `sbatch`, `scontrol` and `srun` programs; the cluster configs load and validate.

Nothing here needs a network, gcloud or SLURM: the stand-ins are small bash scripts that
record their arguments.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from cnnjax.config import validate_config

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch"
CONFIGS = ROOT / "experiments" / "configs"

# Prints its arguments one per line and ends the call with a separator line, appending to $ARGV_LOG.
RECORDER = """#!/usr/bin/env bash
{ for arg in "$@"; do printf '%s\\n' "$arg"; done; printf '%s\\n' '----'; } >> "$ARGV_LOG"
"""


def _launch(script: str, *args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=30
    )


def _lines(output: str) -> list[str]:
    """The printed commands, without the phase comments."""
    return [line for line in output.splitlines() if line and not line.startswith("#")]


def _calls(log: Path) -> list[list[str]]:
    """The argument lists a recorder saw, one per call."""
    calls, current = [], []
    for line in log.read_text().splitlines():
        if line == "----":
            calls.append(current)
            current = []
        else:
            current.append(line)
    return calls


def _stand_ins(tmp_path: Path, **scripts: str) -> dict:
    """An environment whose PATH starts with `bin/` holding the given scripts (name -> text)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", ARGV_LOG=str(tmp_path / "argv.log"), TMPDIR=str(tmp_path))
    return env


# --------------------------------------------------------------------------- local.sh


def test_local_dry_run_prints_the_exact_command():
    result = _launch(
        "local.sh", "--config=experiments/configs/default.py:smoke", "--workdir", "/tmp/run dir",
        "--config.num_epochs=2", "--dry-run", "--", "--mode=sweep", "--cpu_devices=2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "python3 -m cnnjax.main --config=experiments/configs/default.py:smoke --workdir='/tmp/run dir' "
        "--config.num_epochs=2 --mode=sweep --cpu_devices=2\n"
    )


def test_local_runs_what_its_dry_run_prints(tmp_path):
    env = _stand_ins(tmp_path, fake_python=RECORDER)
    args = ["--python=fake_python", "--config=a b.py:smoke", "--workdir=/tmp/w", "--config.seed=3", "--", "--x='q'"]
    printed = _launch("local.sh", "--dry-run", *args, env=env).stdout
    result = _launch("local.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path / "argv.log") == [shlex.split(printed)[1:]]
    assert shlex.split(printed)[1:] == [
        "-m", "cnnjax.main", "--config=a b.py:smoke", "--workdir=/tmp/w", "--config.seed=3", "--x='q'"
    ]


# --------------------------------------------------------------------------- tpu_vm.sh

TPU_ARGS = (
    "--name=r50", "--zone=us-central2-b", "--project=my-proj", "--accelerator-type=v4-32",
    "--config=experiments/configs/tpu_resnet50_imagenet.py:smoke", "--workdir=/mnt/runs/r50",
    "--config.data.data_dir=gs://bucket/tfds",
)
INSTALL = (
    "cd cnnjax && python3 -m pip install --user --quiet uv"
    " && python3 -m uv venv --allow-existing --python 3.11 .venv"
    ' && python3 -m uv pip install --python .venv/bin/python -e ".[tpu]"'
)
WHERE = "--zone=us-central2-b --project=my-proj"
EXISTING_ONLY = """while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\\0' "$f"; fi; done"""


def test_tpu_dry_run_prints_every_gcloud_command(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    result = _launch("tpu_vm.sh", "all", *TPU_ARGS, "--spot", "--dry-run", "--", "--allow_config_change", env=env)
    assert result.returncode == 0, result.stderr
    tarball = tmp_path / "cnnjax-r50.tar.gz"
    assert _lines(result.stdout) == [
        f"gcloud compute tpus tpu-vm create r50 {WHERE} --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot",
        f"(cd {ROOT} && git ls-files -z --cached --others --exclude-standard | {EXISTING_ONLY} | tar -czf {tarball}"
        " --null -T -)",
        f"gcloud compute tpus tpu-vm scp {tarball} r50:cnnjax-src.tar.gz {WHERE} --worker=all",
        f"rm -f {tarball}",
        f"gcloud compute tpus tpu-vm ssh r50 {WHERE} --worker=all --command='mkdir -p cnnjax"
        f" && tar -xzf cnnjax-src.tar.gz -C cnnjax && rm cnnjax-src.tar.gz && {INSTALL}'",
        f"gcloud compute tpus tpu-vm ssh r50 {WHERE} --worker=all --command='cd cnnjax && .venv/bin/python -m"
        " cnnjax.main --config=experiments/configs/tpu_resnet50_imagenet.py:smoke --workdir=/mnt/runs/r50"
        " --distributed --config.data.data_dir=gs://bucket/tfds --allow_config_change'",
        f"gcloud compute tpus tpu-vm delete r50 {WHERE} --quiet",
    ]
    # Phase comments come in create, setup, run, delete order.
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("#")] == [
        "# create", "# setup", "# run", "# delete"
    ]
    assert not tarball.exists()


def test_tpu_sweep_dry_run_prints_the_exact_command_and_runs_it(tmp_path):
    env = _stand_ins(tmp_path, gcloud=RECORDER)
    args = ("run", "--name=s", "--zone=us-central2-b", "--mode=sweep", "--config=experiments/configs/sweep_lr_wd.py",
            "--workdir=/mnt/runs/sweep", "--config.sweep.population_size=64", "--", "--allow_config_change")
    result = _launch("tpu_vm.sh", "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "# run: the sweep of experiments/configs/sweep_lr_wd.py on all workers",
        "gcloud compute tpus tpu-vm ssh s --zone=us-central2-b --worker=all --command='cd cnnjax && .venv/bin/python"
        " -m cnnjax.main --config=experiments/configs/sweep_lr_wd.py --workdir=/mnt/runs/sweep --distributed"
        " --mode=sweep --config.sweep.mesh_devices=0 --config.sweep.population_size=64 --allow_config_change'",
    ]
    printed = _lines(result.stdout)
    result = _launch("tpu_vm.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path / "argv.log") == [shlex.split(line)[1:] for line in printed]


def test_tpu_mode_other_than_train_or_sweep_is_a_usage_error():
    result = _launch("tpu_vm.sh", "run", "--name=s", "--zone=z", "--mode=babysit", "--config=c.py", "--workdir=w",
                     "--dry-run")
    assert result.returncode == 2
    assert "--mode='babysit' is not a mode the launcher runs; valid modes: train, sweep" in result.stderr
    assert result.stdout == ""


def test_tpu_setup_from_a_repository_and_phase_order():
    result = _launch(
        "tpu_vm.sh", "delete", "setup", "--name=t", "--zone=europe-west4-a", "--repo=https://example.com/cnnjax.git",
        "--ref=v1.0", "--remote-dir=code dir", "--python-version=3.12", "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    remote = (
        "if [ ! -d 'code dir'/.git ]; then git clone --quiet https://example.com/cnnjax.git 'code dir'; fi"
        " && git -C 'code dir' fetch --quiet origin v1.0 && git -C 'code dir' checkout --quiet --detach FETCH_HEAD"
        " && cd 'code dir' && python3 -m pip install --user --quiet uv"
        " && python3 -m uv venv --allow-existing --python 3.12 .venv"
        ' && python3 -m uv pip install --python .venv/bin/python -e ".[tpu]"'
    )
    lines = _lines(result.stdout)
    assert lines[0].startswith("gcloud compute tpus tpu-vm ssh t --zone=europe-west4-a --worker=all --command='if ")
    # The remote command is one shell word, quoted so that it reaches gcloud intact.
    assert shlex.split(lines[0]) == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "t", "--zone=europe-west4-a", "--worker=all", "--command=" + remote
    ]
    assert lines[1:] == ["gcloud compute tpus tpu-vm delete t --zone=europe-west4-a --quiet"]


def test_tpu_runs_what_it_prints_and_deletes_the_vm_when_a_phase_fails(tmp_path):
    gcloud = RECORDER + '[[ "$4" != "${FAIL_ON:-}" ]]\n'
    env = _stand_ins(tmp_path, gcloud=gcloud)
    # A --repo setup (a clone on the workers) keeps this test off the live working tree.
    args = ("all", *TPU_ARGS, "--repo=https://example.com/cnnjax.git")
    printed = _lines(_launch("tpu_vm.sh", *args, "--dry-run", env=env).stdout)
    assert [line.split()[4] for line in printed] == ["create", "ssh", "ssh", "delete"]

    result = _launch("tpu_vm.sh", *args, env=dict(env, FAIL_ON="none"))
    assert result.returncode == 0, result.stderr
    assert _calls(tmp_path / "argv.log") == [shlex.split(line)[1:] for line in printed]

    (tmp_path / "argv.log").unlink()
    result = _launch("tpu_vm.sh", "create", "run", "delete", *TPU_ARGS, env=dict(env, FAIL_ON="ssh"))
    assert result.returncode == 1
    assert [call[3] for call in _calls(tmp_path / "argv.log")] == ["create", "ssh", "delete"]


def test_tpu_setup_copies_the_working_tree(tmp_path):
    # A small checkout holding the launchers, so the copy's contents are known exactly.
    repo = tmp_path / "repo"
    (repo / "launch").mkdir(parents=True)
    for script in ("tpu_vm.sh", "_common.sh"):
        (repo / "launch" / script).write_text((LAUNCH / script).read_text())
    for name, text in {".gitignore": "ignored.txt\n", "kept.txt": "", "gone.txt": "", "a b.txt": ""}.items():
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "files"], check=True)
    (repo / "gone.txt").unlink()  # tracked, deleted: left out
    (repo / "new.txt").write_text("")  # untracked: copied
    (repo / "ignored.txt").write_text("")  # ignored: left out

    # The stand-in's scp keeps the tarball it was given.
    gcloud = RECORDER + '[[ "$4" != scp ]] || cp "$5" "$TMPDIR/sent.tar.gz"\n'
    env = _stand_ins(tmp_path, gcloud=gcloud)
    result = subprocess.run(
        ["bash", str(repo / "launch" / "tpu_vm.sh"), "setup", "--name=r50", "--zone=z"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "sent.tar.gz") as archive:
        names = set(archive.getnames())
    assert names == {".gitignore", "kept.txt", "a b.txt", "new.txt", "launch/tpu_vm.sh", "launch/_common.sh"}
    assert [call[3] for call in _calls(tmp_path / "argv.log")] == ["scp", "ssh"]
    assert not (tmp_path / "cnnjax-r50.tar.gz").exists()


# --------------------------------------------------------------------------- gpu_slurm.sh


def test_gpu_dry_run_prints_the_batch_script_and_the_sbatch_command(tmp_path):
    result = _launch(
        "gpu_slurm.sh", "--nodes=2", "--gpus-per-node=4", "--partition=gpu", "--time=1-00:00:00",
        "--account=lab", "--cpus-per-task=16", "--sbatch-option=--qos=high", "--setup=module load cuda",
        "--config=experiments/configs/gpu_resnet50_imagenet.py:nodes=2", f"--workdir={tmp_path}/r50",
        f"--script={tmp_path}/job.sbatch", "--config.seed=1", "--dry-run", "--", "--allow_config_change",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == f"# sbatch script {tmp_path}/job.sbatch:"
    assert out[-2:] == ["# submit:", f"sbatch {tmp_path}/job.sbatch"]
    script = out[1:-2]
    assert script[:11] == [
        "#!/bin/bash",
        "#SBATCH --job-name=cnnjax",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --output=%x-%j.out",
        "#SBATCH --qos=high",
    ]
    for line in (
        f"cd {ROOT}",
        "module load cuda",
        'COORDINATOR_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
        "COORDINATOR_PORT=$((61440 + SLURM_JOB_ID % 4096))",
        'export COORDINATOR_ADDRESS="$COORDINATOR_HOST:$COORDINATOR_PORT"',
        "export JAX_LOCAL_DEVICE_IDS=0,1,2,3",
    ):
        assert line in script
    assert script[-1] == (
        "srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --gpus-per-node=4 --cpus-per-task=16 --kill-on-bad-exit=1"
        " bash -c 'exec python3 -m cnnjax.main"
        f" --config={ROOT}/experiments/configs/gpu_resnet50_imagenet.py:nodes=2 --workdir={tmp_path}/r50"
        ' --coordinator_address="$COORDINATOR_ADDRESS" --num_processes="$SLURM_NTASKS"'
        ' --process_id="$SLURM_PROCID" --config.seed=1 --allow_config_change\''
    )
    assert not (tmp_path / "job.sbatch").exists()


# Stand-ins for the two SLURM programs the batch script calls.
SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2 $3" == "show hostnames node[001-002]" ]] && printf 'node001\\nnode002\\n'
"""
SRUN = """#!/usr/bin/env bash
# Runs the command once per task, as srun would on the nodes.
while [[ $1 == --* ]]; do [[ $1 == --ntasks=* ]] && ntasks=${1#*=}; shift; done
for ((i = 0; i < ntasks; i++)); do SLURM_PROCID=$i SLURM_NTASKS=$ntasks "$@"; done
"""
# Records its arguments and the environment the launcher sets up.
PROCESS = RECORDER.replace("for arg", 'echo "JAX_LOCAL_DEVICE_IDS=$JAX_LOCAL_DEVICE_IDS"; for arg')


def test_gpu_batch_script_gives_each_process_the_coordinator_flags(tmp_path):
    env = _stand_ins(tmp_path, sbatch=RECORDER, scontrol=SCONTROL, srun=SRUN, fake_python=PROCESS)
    result = _launch(
        "gpu_slurm.sh", "--nodes=2", "--gpus-per-node=2", "--python=fake_python", "--config=cfg.py:smoke",
        "--workdir=runs/x", "--setup=export SETUP_RAN=yes", "--job-name=t", "--", "--flag=a b",
        env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    script = tmp_path / "t.sbatch"
    assert _calls(tmp_path / "argv.log") == [[str(script)]]

    (tmp_path / "argv.log").unlink()
    job_env = dict(env, SLURM_JOB_NODELIST="node[001-002]", SLURM_JOB_ID="123")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=job_env, timeout=30)
    assert run.returncode == 0, run.stderr
    expected = [
        [
            "JAX_LOCAL_DEVICE_IDS=0,1", "-m", "cnnjax.main", f"--config={tmp_path}/cfg.py:smoke",
            f"--workdir={tmp_path}/runs/x", "--coordinator_address=node001:61563", "--num_processes=2",
            f"--process_id={process}", "--flag=a b",
        ]
        for process in range(2)
    ]
    assert _calls(tmp_path / "argv.log") == expected


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("local.sh", ["--workdir=/w", "--bogus"], "unknown option '--bogus'; valid options: --config, --workdir"),
        ("local.sh", ["--workdir=/w"], "--config=PATH[:ARG] is required; valid options: --config"),
        ("local.sh", ["--config"], "option --config needs a value"),
        ("local.sh", ["--config", "--workdir=/w"], "option --config needs a value"),
        ("tpu_vm.sh", ["--name=a", "--zone=z"], "no phase given; valid phases: create, setup, run, delete, all"),
        ("tpu_vm.sh", ["launch", "--name=a", "--zone=z"], "unknown phase 'launch'; valid phases: create, setup"),
        ("tpu_vm.sh", ["delete", "--name=a", "--zone=z", "--size=4"], "unknown option '--size=4'; valid options: --name"),
        ("tpu_vm.sh", ["delete", "--zone=z"], "--name=NAME is required"),
        ("tpu_vm.sh", ["delete", "--name=a"], "--zone=ZONE is required"),
        ("tpu_vm.sh", ["create", "--name=a", "--zone=z"], "create needs --accelerator-type=TYPE"),
        ("tpu_vm.sh", ["create", "--name=a", "--zone=z", "--accelerator-type=big"], "is not a TPU type such as v4-8"),
        ("tpu_vm.sh", ["run", "--name=a", "--zone=z", "--workdir=/w"], "run needs --config=PATH[:ARG]"),
        ("tpu_vm.sh", ["run", "--name=a", "--zone=z", "--config=c.py"], "run needs --workdir=DIR"),
        ("tpu_vm.sh", ["setup", "--name=a", "--zone=z", "--ref=main"], "--ref needs --repo=URL"),
        ("tpu_vm.sh", ["delete", "--name=", "--zone=z"], "option --name needs a value"),
        ("gpu_slurm.sh", ["--gpus-per-node=8", "--config=c", "--workdir=w"], "--nodes=N is required; valid options:"),
        ("gpu_slurm.sh", ["--nodes=two", "--gpus-per-node=8", "--config=c", "--workdir=w"],
         "option --nodes must be a positive integer, got 'two'"),
        ("gpu_slurm.sh", ["--nodes=2", "--gpus-per-node=8", "--config=c", "--workdir=w", "--port=99999"],
         "option --port must be at most 65535"),
        ("gpu_slurm.sh", ["--nodes=2", "--gpus=8"], "unknown option '--gpus=8'; valid options: --nodes, --gpus-per-node"),
        ("gpu_slurm.sh", ["--nodes=2", "--sbatch-option", "--qos=high"], "needs its value after '='"),
        ("gpu_slurm.sh", ["--nodes=2", "--gpus-per-node=8", "--config=c", "--workdir=w", "--job-name=a b"],
         "--job-name may use letters, digits"),
    ],
)
def test_usage_errors_exit_2_and_name_the_valid_choices(script, args, message):
    result = _launch(script, *args, "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert "--help' for the full usage." in result.stderr


@pytest.mark.parametrize("script", ["local.sh", "tpu_vm.sh", "gpu_slurm.sh"])
def test_help_lists_the_options(script):
    result = _launch(script, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")
    assert "--dry-run" in result.stdout and "--config=PATH[:ARG]" in result.stdout


# --------------------------------------------------------------------------- configs


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"launch_cfg_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, arg, batch, lr",
    [
        ("tpu_resnet50_imagenet", None, 1024, 0.4),
        ("tpu_resnet50_imagenet", "batch=4096", 4096, 1.6),
        ("tpu_resnet50_imagenet", "smoke", 1024, 0.4),
        ("gpu_resnet50_imagenet", None, 256, 0.1),
        ("gpu_resnet50_imagenet", "nodes=4", 1024, 0.4),
        ("gpu_resnet50_imagenet", "nodes=2,smoke", 512, 0.2),
    ],
)
def test_resnet50_imagenet_configs(name, arg, batch, lr):
    config = _load(name).get_config(arg)
    validate_config(config)  # imagenet2012 passes as a TFDS name without its data
    assert (config.model.name, config.data.name, config.data.streaming) == ("resnet50", "imagenet2012", True)
    assert (config.batch_size, config.mesh.data, config.precision) == (batch, 0, "bfloat16")
    assert config.optimizer.learning_rate == pytest.approx(lr)
    assert (config.optimizer.name, config.optimizer.momentum, config.loss.l2) == ("nesterov", 0.9, 1e-4)
    assert (config.schedule.name, config.schedule.warmup_epochs) == ("cosine", 0.0 if arg and "smoke" in arg else 5.0)
    assert config.num_epochs == (1 if arg and "smoke" in arg else 90)
    assert config.data.image_size == 224 and config.data.augment.flip


@pytest.mark.parametrize(
    "name, precision", [("tpu_resnet20_cifar10", "bfloat16"), ("gpu_resnet20_cifar10", "float32")]
)
@pytest.mark.parametrize("arg", [None, "smoke", "plain,smoke"])
def test_resnet20_cifar10_configs(name, precision, arg):
    config = _load(name).get_config(arg)
    validate_config(config)
    reference = _load("resnet20_cifar10").get_config(arg)
    assert (config.mesh.data, config.precision) == (0, precision)
    config.mesh.data, config.precision = reference.mesh.data, reference.precision
    assert config.to_dict() == reference.to_dict()  # otherwise the single-device recipe unchanged
    if arg is None:
        assert (config.batch_size, config.optimizer.learning_rate, config.loss.l2) == (128, 0.1, 1e-4)
        assert tuple(config.schedule.boundaries_epochs) == (91, 136) and config.num_epochs == 182


@pytest.mark.parametrize(
    "name, arg, message",
    [
        ("tpu_resnet50_imagenet", "nodes=2", "Unknown variant 'nodes=2'; valid: smoke, batch=N"),
        ("gpu_resnet50_imagenet", "nodes=0", "Unknown variant 'nodes=0'; valid: smoke, nodes=N, batch=N"),
        ("gpu_resnet50_imagenet", "nodes=2,batch=512", "not both"),
        ("tpu_resnet20_cifar10", "huge", "valid: plain, smoke"),
    ],
)
def test_config_variant_errors(name, arg, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _load(name).get_config(arg)
