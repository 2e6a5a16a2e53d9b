"""Command line: `python -m cnnjax.main --config=PATH[:ARG] --workdir=DIR [--config.a.b=V ...]`.

Also installed as the `cnnjax` console script.
"""

from __future__ import annotations

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
    if summary.get("status") == "interrupted":
        return
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
    from cnnjax.data import DatasetNotPreparedError
    from cnnjax.diagnostics.babysit import SymmetryRefusal
    from cnnjax.training.config import ConfigError
    from cnnjax.training.train import NonFiniteLossError, WorkdirConfigMismatchError
    from cnnjax.tuning.plans import PlanError
    from cnnjax.tuning.space import SpaceError
    from cnnjax.tuning.sweep import SweepError

    return (ConfigError, WorkdirConfigMismatchError, NonFiniteLossError, DatasetNotPreparedError,
            SpaceError, SweepError, PlanError, SymmetryRefusal)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # libraries' INFO chatter drowns the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if FLAGS.cpu_devices < 0:
        raise app.UsageError(f"--cpu_devices must be >= 0, got {FLAGS.cpu_devices}")
    if FLAGS.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)  # before any backend starts
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if FLAGS.distributed or any(v is not None for v in explicit):
        from cnnjax.training.sharding import MeshError, initialize_distributed

        try:
            initialize_distributed(*explicit)
        except MeshError as err:
            raise app.UsageError(str(err)) from None
    # Library imports happen after flag parsing, which keeps `--help` fast.
    errors = _user_errors()
    try:
        MODES[FLAGS.mode]()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
