#!/usr/bin/env bash
# Creates a Cloud TPU VM (one host or a pod slice), sets cnnjax up on every worker,
# runs one job on all workers at once, and deletes the TPU VM, with gcloud.
set -euo pipefail

PROG=$0
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

PHASES="create, setup, run, delete, all (= create setup run delete)"
DEFAULT_VERSION=tpu-ubuntu2204-base
DEFAULT_PYTHON_VERSION=3.11
REMOTE_TARBALL=cnnjax-src.tar.gz

usage() {
  cat <<EOF
Usage: $PROG PHASE... --name=NAME --zone=ZONE [options] [--config.KEY=VALUE ...] [-- CNNJAX_FLAGS...]

Phases (run in this order whatever the order given; at least one):
  create   gcloud compute tpus tpu-vm create NAME (needs --accelerator-type)
  setup    put the code on every worker (a copy of this working tree, or a clone
           of --repo), make a Python $DEFAULT_PYTHON_VERSION virtual environment there with uv
           (the TPU images ship an older Python) and pip-install cnnjax with its
           [tpu] extra into it
  run      run \`python -m cnnjax.main --config=... --workdir=... --distributed\` on
           all workers at once (--worker=all); JAX finds the other workers itself
           (needs --config and --workdir); with --mode=sweep, the config's sweep
           with its members spread over every TPU core of every worker
  delete   gcloud compute tpus tpu-vm delete NAME --quiet
  all      create setup run delete; the TPU VM is deleted even when a phase fails

Options:
  --name=NAME               TPU VM name (required)
  --zone=ZONE               zone, e.g. us-central2-b (required)
  --project=PROJECT         Google Cloud project (default: gcloud's configured one)
  --accelerator-type=TYPE   e.g. v4-8 (one host), v4-32 (4 hosts), v5litepod-16
  --version=VERSION         TPU software (runtime) version (default: $DEFAULT_VERSION)
  --spot                    create a Spot TPU VM (cheaper, can be preempted)
  --repo=URL                setup clones URL on every worker instead of copying
                            this working tree (tracked and untracked, not ignored, files)
  --ref=REF                 with --repo: the branch, tag or commit to check out
  --remote-dir=DIR          checkout directory on the workers, relative to the home
                            directory (default: cnnjax)
  --python-version=X.Y      Python of the workers' virtual environment (default: $DEFAULT_PYTHON_VERSION)
  --config=PATH[:ARG]       config file, relative to the repository root (run)
  --mode=MODE               run: train (default: one model) or sweep (the config's
                            sweep, its members over every core of every worker;
                            adds --mode=sweep --config.sweep.mesh_devices=0)
  --workdir=DIR             the job's workdir (run): gs://BUCKET/PATH (every worker
                            reaches it, and it outlives a preempted Spot VM; install
                            extra [gcs], which [tpu] includes) or a directory every
                            worker can write
  --config.KEY=VALUE        a config override for run, passed on (repeatable)
  --dry-run                 print every command, exactly, and run none
  -h, --help                this text
  -- FLAGS...               everything after -- is passed to cnnjax (run)

Examples:
  $PROG all --name=r50 --zone=us-central2-b --accelerator-type=v4-32 \\
      --config=experiments/configs/tpu_resnet50_imagenet.py --workdir=gs://BUCKET/runs/r50 \\
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
  $PROG run --name=r50 --zone=us-central2-b --mode=sweep \\
      --config=experiments/configs/sweep_lr_wd.py --workdir=/mnt/runs/sweep
  $PROG create setup --name=t --zone=us-central2-b --accelerator-type=v4-8 --dry-run

Multi-worker ssh needs your gcloud key in the ssh agent first:
  ssh-add ~/.ssh/google_compute_engine
EOF
}

VALID="--name, --zone, --project, --accelerator-type, --version, --spot, --repo, --ref, --remote-dir,"
VALID+=" --python-version, --config, --mode, --workdir, --config.KEY=VALUE, --dry-run, --help, and -- before flags"
VALID+=" for cnnjax"
MODES="train, sweep"

name='' zone='' project='' accelerator_type='' version=$DEFAULT_VERSION spot=0
repo='' ref='' remote_dir=cnnjax python_version=$DEFAULT_PYTHON_VERSION
config='' workdir='' mode=train DRY_RUN=0
want_create=0 want_setup=0 want_run=0 want_delete=0
overrides=() extra=()

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --spot) spot=1 ;;
    --name=* | --zone=* | --project=* | --accelerator-type=* | --version=* | --repo=* | --ref=* | \
      --remote-dir=* | --python-version=* | --config=* | --mode=* | --workdir=*)
      option=${1%%=*}
      value=${1#*=}
      [[ -n $value ]] || usage_error "option $option needs a value"
      set -- "$option" "$value" "${@:2}"
      continue
      ;;
    --name | --zone | --project | --accelerator-type | --version | --repo | --ref | --remote-dir | \
      --python-version | --config | --mode | --workdir)
      require_value "$@"
      case $1 in
        --name) name=$2 ;;
        --zone) zone=$2 ;;
        --project) project=$2 ;;
        --accelerator-type) accelerator_type=$2 ;;
        --version) version=$2 ;;
        --repo) repo=$2 ;;
        --ref) ref=$2 ;;
        --remote-dir) remote_dir=$2 ;;
        --python-version) python_version=$2 ;;
        --config) config=$2 ;;
        --mode) mode=$2 ;;
        --workdir) workdir=$2 ;;
      esac
      shift
      ;;
    --config.*=*) overrides+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    create) want_create=1 ;;
    setup) want_setup=1 ;;
    run) want_run=1 ;;
    delete) want_delete=1 ;;
    all) want_create=1 want_setup=1 want_run=1 want_delete=1 ;;
    -*) usage_error "unknown option '$1'; valid options: $VALID" ;;
    *) usage_error "unknown phase '$1'; valid phases: $PHASES" ;;
  esac
  shift
done

((want_create + want_setup + want_run + want_delete)) || usage_error "no phase given; valid phases: $PHASES"
[[ -n $name ]] || usage_error "--name=NAME is required (the TPU VM's name)"
[[ -n $zone ]] || usage_error "--zone=ZONE is required (e.g. us-central2-b)"
if ((want_create)); then
  [[ -n $accelerator_type ]] || usage_error "create needs --accelerator-type=TYPE (e.g. v4-8, v4-32, v5litepod-16)"
  [[ $accelerator_type =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
    usage_error "--accelerator-type='$accelerator_type' is not a TPU type such as v4-8, v4-32, v5p-8, v5litepod-16, v6e-8"
fi
if ((want_run)); then
  [[ -n $config ]] || usage_error "run needs --config=PATH[:ARG] (relative to the repository root)"
  [[ -n $workdir ]] || usage_error "run needs --workdir=DIR"
fi
[[ $mode == train || $mode == sweep ]] || usage_error "--mode='$mode' is not a mode the launcher runs; valid modes: $MODES"
[[ -n $ref && -z $repo ]] && usage_error "--ref needs --repo=URL (a copied working tree has no ref to check out)"
[[ $python_version =~ ^3\.[0-9]+$ ]] || usage_error "--python-version must look like 3.11, got '$python_version'"

# Flags every gcloud command takes to find the TPU VM.
where=("--zone=$zone")
[[ -n $project ]] && where+=("--project=$project")
tpu_vm=(gcloud compute tpus tpu-vm)
remote_dir_q=$(shell_quote "$remote_dir")

# note TEXT: a comment line between the commands (stdout in a dry run, else stderr).
note() {
  if ((DRY_RUN)); then printf '# %s\n' "$1"; else printf '# %s\n' "$1" >&2; fi
}

phase_create() {
  note "create: $accelerator_type TPU VM $name"
  local cmd=("${tpu_vm[@]}" create "$name" "${where[@]}" "--accelerator-type=$accelerator_type" "--version=$version")
  ((spot)) && cmd+=(--spot)
  run_cmd "${cmd[@]}"
}

phase_setup() {
  local fetch install
  if [[ -n $repo ]]; then
    note "setup: clone $repo on every worker, install cnnjax"
    # Fetching the ref (the remote's default branch without --ref) and checking out
    # FETCH_HEAD also brings an existing checkout up to date.
    fetch="if [ ! -d $remote_dir_q/.git ]; then git clone --quiet $(shell_quote "$repo") $remote_dir_q; fi"
    fetch+=" && git -C $remote_dir_q fetch --quiet origin $(shell_quote "${ref:-HEAD}")"
    fetch+=" && git -C $remote_dir_q checkout --quiet --detach FETCH_HEAD"
  else
    if ! git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      printf '%s: error: %s is not a git checkout, so its files cannot be listed; use --repo=URL\n' "$PROG" "$ROOT" >&2
      exit 1
    fi
    local tarball="${TMPDIR:-/tmp}/cnnjax-$name.tar.gz"
    note "setup: copy this working tree to every worker, install cnnjax"
    # Tracked and untracked files that git does not ignore; the filter leaves out a
    # tracked file deleted from the working tree (tar would stop at it).
    local existing_only
    existing_only=$(cat <<'EOF'
while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done
EOF
)
    run_shell "(cd $(shell_quote "$ROOT") && git ls-files -z --cached --others --exclude-standard | $existing_only | tar -czf $(shell_quote "$tarball") --null -T -)"
    run_cmd "${tpu_vm[@]}" scp "$tarball" "$name:$REMOTE_TARBALL" "${where[@]}" --worker=all
    run_cmd rm -f "$tarball"
    fetch="mkdir -p $remote_dir_q && tar -xzf $REMOTE_TARBALL -C $remote_dir_q && rm $REMOTE_TARBALL"
  fi
  # The TPU images' system Python is older than cnnjax needs; uv fetches a newer one.
  install="cd $remote_dir_q && python3 -m pip install --user --quiet uv"
  install+=" && python3 -m uv venv --allow-existing --python $python_version .venv"
  install+=" && python3 -m uv pip install --python .venv/bin/python -e \".[tpu]\""
  run_cmd "${tpu_vm[@]}" ssh "$name" "${where[@]}" --worker=all "--command=$fetch && $install"
}

phase_run() {
  local job=(.venv/bin/python -m cnnjax.main "--config=$config" "--workdir=$workdir" --distributed)
  if [[ $mode == sweep ]]; then
    note "run: the sweep of $config on all workers"
    # The members are spread over every core of every worker (a multi-process sweep needs all of them).
    job+=(--mode=sweep --config.sweep.mesh_devices=0)
  else
    note "run: $config on all workers"
  fi
  job+=(${overrides[@]+"${overrides[@]}"} ${extra[@]+"${extra[@]}"})
  run_cmd "${tpu_vm[@]}" ssh "$name" "${where[@]}" --worker=all "--command=cd $remote_dir_q && $(quote_words "${job[@]}")"
}

phase_delete() {
  note "delete: TPU VM $name"
  run_cmd "${tpu_vm[@]}" delete "$name" "${where[@]}" --quiet
}

teardown() {
  local status=$?
  trap - EXIT
  phase_delete || status=$((status ? status : 1))
  exit "$status"
}

if ((want_delete && !DRY_RUN && (want_create + want_setup + want_run))); then
  # Tear down even when an earlier phase fails or the launcher is interrupted.
  trap teardown EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ((want_create)) && phase_create
  ((want_setup)) && phase_setup
  ((want_run)) && phase_run
  exit 0  # the EXIT trap deletes the TPU VM
fi
((want_create)) && phase_create
((want_setup)) && phase_setup
((want_run)) && phase_run
((want_delete)) && phase_delete
exit 0
