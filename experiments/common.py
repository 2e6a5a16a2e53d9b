"""What the experiment scripts share: flags, the CIFAR-10 subset, tables, plots.

Every experiment is `python -m experiments.<name> --workdir=DIR [--variant=smoke|full]`
and writes into DIR at least `table.csv`, `table.md` and one PNG plot. The
`smoke` variant runs in under a minute on a 2-core CPU (the test suite runs
it); `full` is the size a GPU/TPU user runs; a few experiments also have a
`medium` variant, tens of minutes on a CPU. Image experiments below full size
train on a subset of the real CIFAR-10 training JPEGs
(`../shared/data/cifar10-train-jpg.tar.gz`, or `--data_path`), with a
validation split carved from them; their full variants read TFDS `cifar10`.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.configs.base import VARIANTS, WITH_MEDIUM

ROOT = Path(__file__).resolve().parents[1]
CIFAR_NAME = "cifar10-train-jpg.tar.gz"


def find_cifar_archive() -> Path:
    """Where the CIFAR-10 JPEG archive is: `$CNNJAX_CIFAR10_JPG` if set, else
    `shared/data/` beside this checkout or one of its parent directories, else
    beside the local checkout this one was cloned from (a fresh clone in a
    scratch directory still finds the data). Returns the default location
    (`../shared/data/`) when none exists, so errors name where it was expected.
    """
    if os.environ.get("CNNJAX_CIFAR10_JPG"):
        return Path(os.environ["CNNJAX_CIFAR10_JPG"])
    default = ROOT.parent / "shared" / "data" / CIFAR_NAME
    candidates = [d / "shared" / "data" / CIFAR_NAME for d in ROOT.parents]
    try:
        import subprocess

        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        if origin and os.path.isdir(origin):
            candidates.append(Path(origin).resolve().parent / "shared" / "data" / CIFAR_NAME)
    except (OSError, subprocess.SubprocessError):
        pass
    return next((c for c in candidates if c.exists()), default)


CIFAR_ARCHIVE = find_cifar_archive()


def check_variant(variant: str, valid: Sequence[str] = VARIANTS) -> str:
    if variant not in valid:
        raise ValueError(f"Unknown variant {variant!r}; valid choices: {', '.join(valid)}")
    return variant


# -- data ----------------------------------------------------------------------
def cifar_data(config, variant: str, *, data_path: str | None = None, train_examples: int = 2000,
               eval_examples: int = 500) -> None:
    """Points `config.data` at CIFAR-10: the local JPEG subset (smoke, medium) or TFDS `cifar10` (full).

    Smoke and medium: `train_examples` stratified training images from the archive and a
    validation split of `eval_examples` carved from the same archive (never
    overlapping the training subset). Full: TFDS `cifar10`, with the
    validation split carved from its 50,000 training images.
    """
    check_variant(variant, WITH_MEDIUM)
    data = config.data
    data.preprocess = data.get("preprocess", "standardize") or "standardize"
    if variant != "full":
        path = Path(data_path) if data_path else CIFAR_ARCHIVE
        if not path.exists():
            raise FileNotFoundError(
                f"CIFAR-10 JPEG archive not found at {path}; pass --data_path=PATH "
                "(a .tar.gz or folder laid out as train/<class>/<image>)")
        data.name = "image_folder"
        data.path = str(path)
        data.max_train_examples = train_examples
        data.max_eval_examples = eval_examples
    else:
        data.name = "cifar10"
        if data_path:
            data.data_dir = data_path


_LOADED: dict[str, Any] = {}  # config.data as JSON -> Dataset, newest last
_MAX_LOADED = 3


def load(config):
    """Loads `config.data` once (experiments share one Dataset across their runs).

    The last few loads are kept per process, so experiments run one after
    another (the test suite) read an identical data config once: listing the
    CIFAR-10 JPEG archive alone takes seconds. Datasets are frozen; treat the
    arrays as read-only.
    """
    from cnnjax.data import load_dataset

    key = config.data.to_json_best_effort(sort_keys=True)
    if key not in _LOADED:
        if len(_LOADED) >= _MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = load_dataset(config.data)
    return _LOADED[key]


def prepare(get_config: Callable[[str], Any], variant: str, data_path: str | None = None):
    """The image experiments' prologue: `variant`'s config, its data pointed at CIFAR-10, loaded once.

    The JPEG subset sizes are `config.experiment.train_examples` and
    `eval_examples`. `get_config` rejects a variant it does not have. Returns
    `(config, config.experiment, dataset)`.
    """
    config = get_config(variant)
    exp = config.experiment
    cifar_data(config, variant, data_path=data_path, train_examples=exp.train_examples,
               eval_examples=exp.eval_examples)
    return config, exp, load(config)


# -- tables --------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub markdown table of `rows` (dicts), columns in first-seen order unless given."""
    columns = list(columns or _columns(rows))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, ""), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def write_table(workdir: str, rows: Sequence[dict[str, Any]], name: str = "table",
                columns: Sequence[str] | None = None, title: str | None = None) -> tuple[str, str]:
    """Writes `DIR/<name>.csv` (full precision) and `DIR/<name>.md`; returns both paths.

    Each file is written to a temporary name and renamed, so a run killed
    mid-write leaves the previous table whole.
    """
    from cnnjax.training.files import atomic_write

    os.makedirs(workdir, exist_ok=True)
    columns = list(columns or _columns(rows))
    csv_path = os.path.join(workdir, f"{name}.csv")
    with atomic_write(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    md_path = os.path.join(workdir, f"{name}.md")
    with atomic_write(md_path) as f:
        if title:
            f.write(f"### {title}\n\n")
        f.write(markdown_table(rows, columns))
    return csv_path, md_path


def read_table(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- plots ---------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, workdir: str, name: str) -> str:
    """Saves `fig` as `DIR/<name>.png` (temporary name, then renamed) and closes it."""
    from cnnjax.training.files import atomic_write

    path = os.path.join(workdir, name if name.endswith(".png") else f"{name}.png")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    pyplot().close(fig)
    return path


# -- training ------------------------------------------------------------------
def train(config, members: list[dict[str, Any]], *, dataset=None, workdir: str | None = None, plan: str | None = None):
    """Trains `members` (dicts of config path -> value) as populations; returns their records.

    See `cnnjax.tuning.context.train_members`: values that change shapes or code
    split the members into groups trained one after another.
    """
    from cnnjax.tuning.context import train_members

    return train_members(config, members, dataset=dataset, workdir=workdir, plan=plan,
                         progress=sys.stderr.isatty())


def error_curve(record) -> tuple[list[int], list[float]]:
    """(steps, training error) of a member record, one point per logging window."""
    steps = [s for s, _, _ in record.train_history]
    return steps, [1.0 - a for _, _, a in record.train_history]


# -- entry point ---------------------------------------------------------------
def main(run: Callable[..., Any], *, extra_flags: Callable[[], None] | None = None,
         variants: Sequence[str] = VARIANTS) -> None:
    """absl entry point: `run(workdir=..., variant=..., data_path=...)` with the standard flags.

    `variants`: the `--variant` choices (`WITH_MEDIUM` for experiments that have a medium size).
    """
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "Directory for table.csv / table.md / plots.", required=True)
    flags.DEFINE_enum("variant", "smoke", list(variants),
                      "smoke: under a minute on a CPU; medium: tens of minutes on a CPU; full: the real size.")
    flags.DEFINE_string("data_path", None, "CIFAR-10 JPEG archive (smoke, medium) or TFDS data_dir (full).")
    if extra_flags:
        extra_flags()

    def _main(argv):
        del argv
        FLAGS = flags.FLAGS
        start = time.time()
        run(workdir=FLAGS.workdir, variant=FLAGS.variant, data_path=FLAGS.data_path)
        print(f"wrote {FLAGS.workdir} in {time.time() - start:.1f} s")

    app.run(_main)
