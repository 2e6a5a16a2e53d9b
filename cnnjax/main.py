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
flags.DEFINE_enum("mode", "train", ["train"], "What to run.")
flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though its config.json differs from --config."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # libraries' INFO chatter drowns the progress bar
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Library imports after flag parsing keep `--help` fast.
    from cnnjax.training import config as config_lib
    from cnnjax.training.train import NonFiniteLossError, WorkdirConfigMismatchError, train_and_evaluate

    try:
        summary = train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    except (config_lib.ConfigError, WorkdirConfigMismatchError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # data set missing and the like: a message, not a trace
        from cnnjax.data import DatasetNotPreparedError

        if isinstance(err, DatasetNotPreparedError):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    if summary.get("status") == "completed":
        keys = ("eval/accuracy", "eval/loss", "val/accuracy", "train/loss", "steps", "num_params", "wall_time_s")
        print("Summary: " + ", ".join(f"{k}={summary[k]:.4g}" for k in keys if k in summary))
        logging.info("Summary written to %s/summary.json", FLAGS.workdir)
    return 0


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
