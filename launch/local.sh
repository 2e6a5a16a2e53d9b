#!/usr/bin/env bash
# Runs one cnnjax job on this machine (CPU, one or more GPUs, or a single-host TPU VM).
set -euo pipefail

PROG=$0
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() {
  cat <<EOF
Usage: $PROG --config=PATH[:ARG] --workdir=DIR [options] [--config.KEY=VALUE ...] [-- CNNJAX_FLAGS...]

Runs \`PYTHON -m cnnjax.main --config=PATH[:ARG] --workdir=DIR ...\` on this machine,
on whatever devices JAX finds (CPU, all local GPUs, or the chips of one TPU VM).
Paths are used as given, relative to the current directory.

Options:
  --config=PATH[:ARG]   experiment config file, optionally with its variant (required)
  --workdir=DIR         where checkpoints, metrics and the summary go (required)
  --python=PYTHON       interpreter to run (default: \$PYTHON, else python3)
  --config.KEY=VALUE    a config override, passed on as it is (repeatable)
  --dry-run             print the exact command instead of running it
  -h, --help            this text
  -- FLAGS...           everything after -- is passed to cnnjax unchanged
                        (e.g. -- --mode=sweep --cpu_devices=2)

Example:
  $PROG --config=experiments/configs/resnet20_cifar10.py:smoke --workdir=/tmp/r20 \\
      --config.data.data_dir=\$HOME/tensorflow_datasets -- --allow_config_change
EOF
}

VALID="--config, --workdir, --python, --config.KEY=VALUE, --dry-run, --help, and -- before flags for cnnjax"
config='' workdir='' python=${PYTHON:-python3} DRY_RUN=0
overrides=() extra=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --config | --workdir | --python)
      require_value "$@"
      case $1 in
        --config) config=$2 ;;
        --workdir) workdir=$2 ;;
        --python) python=$2 ;;
      esac
      shift
      ;;
    --config.*=*) overrides+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    *) usage_error "unknown option '$1'; valid options: $VALID" ;;
  esac
  shift
done
[[ -n $config ]] || usage_error "--config=PATH[:ARG] is required; valid options: $VALID"
[[ -n $workdir ]] || usage_error "--workdir=DIR is required; valid options: $VALID"
[[ -n $python ]] || usage_error "--python needs a value"

cmd=("$python" -m cnnjax.main "--config=$config" "--workdir=$workdir")
cmd+=(${overrides[@]+"${overrides[@]}"} ${extra[@]+"${extra[@]}"})
if ((DRY_RUN)); then
  run_cmd "${cmd[@]}"
else
  printf '+ %s\n' "$(quote_words "${cmd[@]}")" >&2
  exec "${cmd[@]}"
fi
