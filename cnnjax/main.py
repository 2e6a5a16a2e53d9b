"""Command line: `python -m cnnjax.main --config=PATH[:ARG] --workdir=DIR [--config.a.b=V ...]`.

Also installed as the `cnnjax` console script.
"""

from __future__ import annotations

import difflib
import errno
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (PATH[:ARG]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_enum(
    "mode", "train", ["train", "sweep", "babysit", "preflight"],
    "train: one model (with monitors and a report if config.monitor.every > 0); sweep: the config's sweep as "
    "populations; babysit: pre-flight checks, then a monitored run and a report; preflight: the checks only.",
)
flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though its config.json differs from --config."
)
flags.DEFINE_integer(
    "cpu_devices", 0, "On a CPU host, expose this many CPU devices (0: JAX's default, one) so that "
    "--config.sweep.mesh_devices can spread a population's members over cores; ignored on accelerators.",
)
flags.DEFINE_bool(
    "distributed", False, "Multi-process run: call jax.distributed.initialize() and let JAX find the coordinator "
    "(Cloud TPU VMs and pod slices, SLURM, Open MPI). Launch the same command on every host.",
)
flags.DEFINE_string("coordinator_address", None, "Multi-process run with an explicit coordinator: HOST:PORT of "
                    "process 0 (with --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "Multi-process run: the number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index, 0 .. num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def _train() -> None:
    from cnnjax.training.train import train_and_evaluate

    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    if summary.get("status") == "completed":
        keys = ("eval/accuracy", "eval/loss", "val/accuracy", "train/loss", "steps", "num_params", "wall_time_s")
        print("Summary: " + ", ".join(f"{k}={summary[k]:.4g}" for k in keys if k in summary))
        logging.info("Summary written to %s/summary.json", FLAGS.workdir)


def _sweep() -> None:
    from cnnjax.tuning.sweep import run_sweep

    summary = run_sweep(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    print(f"Sweep: {summary['members']} members, {summary['diverged']} diverged; best member "
          f"{summary['best_member']} val accuracy {summary['best_val_accuracy']} with {summary['best_values']}. "
          f"Results in {FLAGS.workdir}/results.csv")
    for warning in summary["warnings"]:
        print(f"warning: {warning}")


def _babysit(train: bool | None = None) -> None:
    from cnnjax.diagnostics.babysit import babysit

    result = babysit(FLAGS.config, FLAGS.workdir, train=train, allow_config_change=FLAGS.allow_config_change)
    passed = sum(c["status"] != "fail" for c in result["checks"])
    print(f"Babysit: {passed}/{len(result['checks'])} checks passed, "
          f"{len(result.get('verdicts', []))} verdicts; see {FLAGS.workdir}/babysit.json")


def _train_or_monitor() -> None:
    if FLAGS.config.get("monitor") and FLAGS.config.monitor.every > 0:
        from cnnjax.diagnostics.babysit import monitored_run

        summary = monitored_run(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
        print(f"Summary: {len(summary.get('verdicts', []))} verdicts; report in {FLAGS.workdir}/report.html")
        return
    _train()


MODES = {"train": _train_or_monitor, "sweep": _sweep, "babysit": _babysit, "preflight": lambda: _babysit(train=False)}


def _user_errors() -> tuple[type, ...]:
    """Errors that are the input's fault: printed as a message, exit status 2."""
    from cnnjax.data import DataError, DatasetNotPreparedError
    from cnnjax.diagnostics.babysit import SymmetryRefusal
    from cnnjax.training.config import ConfigError
    from cnnjax.training.train import NonFiniteLossError, WorkdirConfigMismatchError
    from cnnjax.tuning.plans import PlanError
    from cnnjax.tuning.space import SpaceError
    from cnnjax.tuning.sweep import SweepError

    return (ConfigError, WorkdirConfigMismatchError, NonFiniteLossError, DatasetNotPreparedError, DataError,
            SpaceError, SweepError, PlanError, SymmetryRefusal)


class WorkdirError(Exception):
    """`--workdir` cannot hold a run: it is a file, or the disk is full or read-only."""


class FlagError(Exception):
    """A command-line flag outside the config (devices, coordinator) has an impossible value."""


# Errors of the disk under the workdir: the user's to fix (free space, permissions), not a bug.
_DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR)


def _disk_error(err: OSError) -> WorkdirError | None:
    """The message for a disk fault while writing, or None for other OS errors."""
    if err.errno not in _DISK_ERRNOS:
        return None
    where = err.filename or FLAGS.workdir
    return WorkdirError(
        f"cannot write {where!r}: {err.strerror}. Outputs already written are kept, and so is the last "
        f"complete checkpoint in {FLAGS.workdir}/checkpoints; free space (or fix permissions) and run the "
        "same command again to resume."
    )


def _check_workdir_flag(workdir: str) -> None:
    """A workdir that cannot hold a run is refused before any data is loaded or anything compiled."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir!r} is a file; name a directory (it is created if missing).")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):  # also catches a read-only filesystem (EROFS), even as root
        raise WorkdirError(
            f"--workdir={workdir!r} cannot be written: {existing!r} is on a read-only filesystem or not "
            "writable by this user; name a writable directory."
        )


def _nearest_config_key(config, bad: str) -> str:
    """'did you mean' for an unknown `--config.KEY`: the closest existing dotted key."""
    keys: list[str] = []

    def walk(node, prefix):
        for key, value in node.items():
            keys.append(prefix + key)
            if hasattr(value, "items"):
                walk(value, f"{prefix}{key}.")

    walk(config, "")
    close = difflib.get_close_matches(bad, keys, n=1, cutoff=0.6)
    return f"; did you mean --config.{close[0]}?" if close else "; see the keys in cnnjax/training/config.py"


def _load_config_file(argv: list[str]):
    """The config that `--config=PATH[:ARG]` names (absl may fail before it stores it), or None."""
    import importlib.util

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_cnnjax_config", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # the message then falls back to absl's own
        return None


def _unknown_override(argv: list[str]) -> str | None:
    """The first `--config.KEY=...` whose KEY the loaded config does not have."""
    config = FLAGS["config"].value or _load_config_file(argv)
    if config is None:
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                return f"unknown config key {key!r}{_nearest_config_key(config, key)}"
            node = node[part]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with bad flags reported in one line and exit status 2."""
    try:
        remaining = FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as err:
        message = _unknown_override(argv[1:]) if not isinstance(err, flags.IllegalFlagValueError) else None
        text = str(err).strip().strip("'\"").replace("\\n", " ")
        if "Traceback" in text:  # a config file's own error: its first line and the exception, not the stack
            lines = [line for line in text.splitlines() if line.strip()]
            text = f"{lines[0]} {lines[-1]}"
        print(f"error: {message or text}", file=sys.stderr)
        sys.exit(2)
    try:  # the config file loads lazily: a missing file or a failing get_config shows on first use
        FLAGS.config.keys()
    except Exception as err:  # noqa: BLE001 (any failure of the user's config file)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        print(f"error: --config={FLAGS['config'].config_filename}: {' '.join(lines[-2:])}", file=sys.stderr)
        sys.exit(2)
    return remaining


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])!r}; every option is a --flag "
              "(--config.KEY=VALUE for config keys)", file=sys.stderr)
        return 2
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # libraries' INFO chatter drowns the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        _check_workdir_flag(FLAGS.workdir)
        _setup_devices()
        # Library imports happen after flag parsing, which keeps `--help` fast.
        errors = (FlagError, WorkdirError, *_user_errors())
    except (FlagError, WorkdirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        MODES[FLAGS.mode]()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        disk = _disk_error(err)
        if disk is None:
            raise
        print(f"error: {disk}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Background writers (TensorBoard, orbax) would fail again at exit, each with its own traceback.
        os._exit(2)
    return 0


def _setup_devices() -> None:
    """Applies --cpu_devices and the multi-process flags (before any JAX backend starts)."""
    if FLAGS.cpu_devices < 0:
        raise FlagError(f"--cpu_devices must be >= 0 (0: JAX's default, one device), got {FLAGS.cpu_devices}")
    if FLAGS.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.distributed or any(v is not None for v in explicit):
        from cnnjax.training.sharding import MeshError, initialize_distributed

        try:
            initialize_distributed(*explicit)
        except MeshError as err:
            raise FlagError(str(err)) from None


def run() -> None:
    """Console-script entry point."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
