"""Command line: `python -m cnnjax.main --config=PATH[:ARG] --workdir=DIR [--config.a.b=V ...]`.

Also installed as the `cnnjax` console script.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cnnjax.cli_errors import FlagError, WorkdirError, check_workdir_flag, parse_flags, write_fault

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (PATH[:ARG]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
flags.DEFINE_enum(
    "mode", "train", ["train", "sweep", "babysit", "preflight", "eval", "predict", "export"],
    "train: one model (with monitors and a report if config.monitor.every > 0); sweep: the config's sweep as "
    "populations; babysit: pre-flight checks, then a monitored run and a report; preflight: the checks only; "
    "eval / predict / export: use the trained run in --workdir (its own config.json; no --config).",
)
flags.DEFINE_integer("checkpoint_step", None, "eval/predict/export: the checkpoint step to use (default: latest).")
flags.DEFINE_string("images", None, "predict: an image file, a folder (searched recursively) or a .tar.gz.")
flags.DEFINE_string("predictions", None, "predict: the CSV to write (default: WORKDIR/predictions.csv).")
flags.DEFINE_string("export_dir", None, "export: the directory to write the exported model into.")
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
flags.DEFINE_string(
    "compilation_cache", os.environ.get("CNNJAX_COMPILATION_CACHE", "auto"),
    "Directory where compiled programs are kept for later runs of the same program (JAX's persistent "
    "compilation cache): auto ($JAX_COMPILATION_CACHE_DIR, else ~/.cache/cnnjax/jax), a directory, or off. "
    "Default from $CNNJAX_COMPILATION_CACHE.",
)
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


def _inference() -> None:
    from cnnjax.inference.modes import run_mode

    run_mode(FLAGS.mode, FLAGS.workdir, FLAGS.config, step=FLAGS.checkpoint_step, images=FLAGS.images,
             predictions=FLAGS.predictions, export_dir=FLAGS.export_dir)


MODES = {"train": _train_or_monitor, "sweep": _sweep, "babysit": _babysit, "preflight": lambda: _babysit(train=False),
         "eval": _inference, "predict": _inference, "export": _inference}
INFERENCE_MODES = ("eval", "predict", "export")


def _raw_flags(argv: list[str]) -> dict[str, str]:
    """`--NAME=VALUE` and `--NAME VALUE` arguments as typed (before absl parses them), the last one winning."""
    values = {}
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            values[name] = value
        elif arg.startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            values[arg[2:]] = argv[i + 1]
    return values


def _with_run_config(argv: list[str]) -> list[str]:
    """For eval/predict/export, `--config` is the run's own config.json (so --config.data.* apply to it).

    For eval, the folder it will evaluate starts decoding on the idle cores
    now, while flags are parsed and libraries imported (`cnnjax.inference.prefetch`).
    """
    raw = _raw_flags(argv[1:])
    mode, workdir = raw.get("mode"), raw.get("workdir")
    has_config = any(a == "--config" or a.startswith("--config=") for a in argv)
    if mode not in INFERENCE_MODES or not workdir:
        return argv
    if has_config:
        print(f"error: --mode={mode} uses the run's own {workdir}/config.json; drop --config "
              "(--config.data.KEY=VALUE overrides still apply).", file=sys.stderr)
        sys.exit(2)
    if mode == "eval":
        from cnnjax.inference import prefetch

        prefetch.start(workdir, {k[len("config.data."):]: v for k, v in raw.items() if k.startswith("config.data.")})
    run_config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "inference", "run_config.py")
    return [argv[0], f"--config={run_config}:{workdir}", *argv[1:]]


def _user_errors() -> tuple[type, ...]:
    """Errors that are the input's fault: printed as a message, exit status 2."""
    from cnnjax.data import DataError, DatasetNotPreparedError
    from cnnjax.diagnostics.babysit import SymmetryRefusal
    from cnnjax.inference.restore import InferenceError
    from cnnjax.training.config import ConfigError
    from cnnjax.training.train import NonFiniteLossError, WorkdirConfigMismatchError
    from cnnjax.tuning.context import SweepError
    from cnnjax.tuning.plans import PlanError
    from cnnjax.tuning.space import SpaceError

    return (ConfigError, WorkdirConfigMismatchError, NonFiniteLossError, DatasetNotPreparedError, DataError,
            SpaceError, SweepError, PlanError, SymmetryRefusal, InferenceError)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])!r}; every option is a --flag "
              "(--config.KEY=VALUE for config keys)", file=sys.stderr)
        return 2
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # libraries' INFO chatter drowns the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        check_workdir_flag(FLAGS.workdir)
        _setup_devices()
        # Library imports happen after flag parsing, which keeps `--help` fast.
        errors = (FlagError, WorkdirError, *_user_errors())
    except (FlagError, WorkdirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if FLAGS.mode not in INFERENCE_MODES:  # those read a trained run's own config.json
            from cnnjax.config import validate_config

            validate_config(FLAGS.config)  # every block, whatever the mode: before any compile or write
        MODES[FLAGS.mode]()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 (a bucket's write failures come in many types)
        fault = write_fault(err, FLAGS.workdir) if FLAGS.workdir else None
        if fault is None:
            raise
        print(f"error: {fault}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Background writers (TensorBoard, orbax) would fail again at exit, each with its own traceback.
        os._exit(2)
    return 0


# XLA:CPU's concurrency-optimised scheduler lets a device start independent all-reduces at
# once, each holding one of the host's intra-op threads while it waits for the other devices.
# With several CPU devices on few cores every thread can end up waiting and the run aborts
# after XLA's 40 s rendezvous timeout (LeNet-5 on the CIFAR-10 JPEGs, --cpu_devices=2
# --config.mesh.data=2 on 2 cores, within its first epoch); in program order it completes.
CPU_COLLECTIVES_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def xla_flags_for_cpu_devices(cpu_devices: int, xla_flags: str) -> str:
    """`XLA_FLAGS` for a host with `cpu_devices` CPU devices: with more than one, collectives in program order.

    A value the user set for the scheduler flag is kept.
    """
    if cpu_devices <= 1 or "xla_cpu_enable_concurrency_optimized_scheduler" in xla_flags:
        return xla_flags
    return f"{xla_flags} {CPU_COLLECTIVES_FLAG}".strip()


def _setup_devices() -> None:
    """Host malloc settings, --cpu_devices, --compilation_cache and the multi-process flags (before any JAX backend starts)."""
    if FLAGS.cpu_devices < 0:
        raise FlagError(f"--cpu_devices must be >= 0 (0: JAX's default, one device), got {FLAGS.cpu_devices}")
    from cnnjax.training.host_malloc import keep_freed_memory

    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    several_processes = FLAGS.distributed or any(v is not None for v in explicit)
    # Before JAX's threads exist: a CPU step reuses its buffers' pages.
    keep_freed_memory(dispatch_inline=not several_processes)
    if FLAGS.cpu_devices:
        import jax

        os.environ["XLA_FLAGS"] = xla_flags_for_cpu_devices(FLAGS.cpu_devices, os.environ.get("XLA_FLAGS", ""))
        jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
    from cnnjax.training import compile_cache

    try:
        compile_cache.enable(compile_cache.cache_dir(FLAGS.compilation_cache))
    except compile_cache.CacheDirError as err:
        raise FlagError(str(err)) from None
    if several_processes:
        from cnnjax.training.sharding import MeshError, initialize_distributed

        try:
            initialize_distributed(*explicit)
        except MeshError as err:
            raise FlagError(str(err)) from None


def run() -> None:
    """Console-script entry point.

    eval, predict and export end with `os._exit` once they have succeeded:
    every file they write is complete and renamed into place by then, and the
    interpreter's own teardown (JAX's runtime and thread pools) took another
    0.25-0.3 s of a 2.5 s eval command on the 2-core CPU.
    """
    try:
        app.run(main, argv=_with_run_config(sys.argv), flags_parser=parse_flags)
    except SystemExit as done:
        if done.code in (0, None) and FLAGS.is_parsed() and FLAGS.mode in INFERENCE_MODES:
            logging.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        raise


if __name__ == "__main__":
    run()
