#!/usr/bin/env bash
# Writes and submits a SLURM batch job that runs one cnnjax job on N nodes x G GPUs.
set -euo pipefail

PROG=$0
# shellcheck source=launch/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
Usage: $PROG --nodes=N --gpus-per-node=G --config=PATH[:ARG] --workdir=DIR [options]
           [--config.KEY=VALUE ...] [-- CNNJAX_FLAGS...]

Writes an sbatch script and submits it with \`sbatch\`. The job starts one process
per node (srun --ntasks-per-node=1); each process drives all G GPUs of its node.
The first node of the allocation (\`scontrol show hostnames \$SLURM_JOB_NODELIST\`)
hosts JAX's coordinator, and every process gets
  --coordinator_address=HOST:PORT --num_processes=\$SLURM_NTASKS --process_id=\$SLURM_PROCID
The job runs in this repository ($ROOT); relative --config and --workdir
paths are made absolute against the current directory, so the job finds them.

Options:
  --nodes=N               nodes (required)
  --gpus-per-node=G       GPUs per node (required)
  --config=PATH[:ARG]     experiment config file (required)
  --workdir=DIR           the job's workdir, on a file system every node sees (required)
  --config.KEY=VALUE      a config override, passed on (repeatable)
  --partition=NAME        SLURM partition
  --account=NAME          SLURM account
  --time=LIMIT            time limit, e.g. 2-00:00:00
  --cpus-per-task=C       CPUs for each node's process (input pipeline threads)
  --job-name=NAME         job name (default: cnnjax)
  --port=PORT             coordinator port (default: 61440 + job id mod 4096, so two
                          jobs sharing a node do not collide)
  --python=PYTHON         interpreter on the nodes (default: python3)
  --setup=LINE            a shell line run before srun, e.g. 'source .venv/bin/activate'
                          or 'module load cuda' (repeatable, kept in order)
  --sbatch-option=OPT     an extra '#SBATCH OPT' line, e.g. --sbatch-option=--qos=high (repeatable)
  --script=PATH           where the sbatch script is written (default: ./JOB_NAME.sbatch)
  --dry-run               print the sbatch script and the sbatch command; write and submit nothing
  -h, --help              this text
  -- FLAGS...              everything after -- is passed to cnnjax

Example:
  $PROG --nodes=4 --gpus-per-node=8 --partition=gpu --time=3-00:00:00 \\
      --config=experiments/configs/gpu_resnet50_imagenet.py:nodes=4 --workdir=/shared/runs/r50 \\
      --setup='source .venv/bin/activate' --config.data.data_dir=/shared/tensorflow_datasets
EOF
}

VALID="--nodes, --gpus-per-node, --config, --workdir, --config.KEY=VALUE, --partition, --account, --time,"
VALID+=" --cpus-per-task, --job-name, --port, --python, --setup, --sbatch-option, --script, --dry-run, --help,"
VALID+=" and -- before flags for cnnjax"

nodes='' gpus_per_node='' config='' workdir='' partition='' account='' time_limit='' cpus_per_task=''
job_name=cnnjax port='' python=python3 script='' DRY_RUN=0
setup_lines=() sbatch_options=() overrides=() extra=()

while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --nodes=* | --gpus-per-node=* | --config=* | --workdir=* | --partition=* | --account=* | --time=* | \
      --cpus-per-task=* | --job-name=* | --port=* | --python=* | --setup=* | --sbatch-option=* | --script=*)
      option=${1%%=*}
      value=${1#*=}
      [[ -n $value ]] || usage_error "option $option needs a value"
      case $option in
        # These values may start with a dash, so they skip require_value's check.
        --sbatch-option) sbatch_options+=("$value"); shift; continue ;;
        --setup) setup_lines+=("$value"); shift; continue ;;
      esac
      set -- "$option" "$value" "${@:2}"
      continue
      ;;
    --nodes | --gpus-per-node | --config | --workdir | --partition | --account | --time | --cpus-per-task | \
      --job-name | --port | --python | --setup | --sbatch-option | --script)
      # An sbatch option's value starts with a dash: only --sbatch-option=OPT is unambiguous.
      [[ $1 != --sbatch-option ]] || usage_error "option --sbatch-option needs its value after '=' (--sbatch-option=--qos=high)"
      require_value "$@"
      case $1 in
        --nodes) nodes=$2 ;;
        --gpus-per-node) gpus_per_node=$2 ;;
        --config) config=$2 ;;
        --workdir) workdir=$2 ;;
        --partition) partition=$2 ;;
        --account) account=$2 ;;
        --time) time_limit=$2 ;;
        --cpus-per-task) cpus_per_task=$2 ;;
        --job-name) job_name=$2 ;;
        --port) port=$2 ;;
        --python) python=$2 ;;
        --setup) setup_lines+=("$2") ;;
        --sbatch-option) sbatch_options+=("$2") ;;
        --script) script=$2 ;;
      esac
      shift
      ;;
    --config.*=*) overrides+=("$1") ;;
    --) shift; extra=("$@"); break ;;
    *) usage_error "unknown option '$1'; valid options: $VALID" ;;
  esac
  shift
done

[[ -n $nodes ]] || usage_error "--nodes=N is required; valid options: $VALID"
[[ -n $gpus_per_node ]] || usage_error "--gpus-per-node=G is required; valid options: $VALID"
[[ -n $config ]] || usage_error "--config=PATH[:ARG] is required; valid options: $VALID"
[[ -n $workdir ]] || usage_error "--workdir=DIR is required; valid options: $VALID"
require_positive_int --nodes "$nodes"
require_positive_int --gpus-per-node "$gpus_per_node"
[[ -z $cpus_per_task ]] || require_positive_int --cpus-per-task "$cpus_per_task"
if [[ -n $port ]]; then
  require_positive_int --port "$port"
  ((port <= 65535)) || usage_error "option --port must be at most 65535, got '$port'"
fi
[[ $job_name =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--job-name may use letters, digits, '_', '.', '-', got '$job_name'"

# The job runs in the repository root: make the user's relative paths absolute now.
config_path=${config%%:*}
config_arg=${config#"$config_path"}
config=$(absolute_path "$config_path")$config_arg
workdir=$(absolute_path "$workdir")
script=$(absolute_path "${script:-$job_name.sbatch}")

device_ids=0
for ((i = 1; i < gpus_per_node; i++)); do device_ids+=",$i"; done

srun_cmd=(srun "--nodes=$nodes" "--ntasks=$nodes" --ntasks-per-node=1 "--gpus-per-node=$gpus_per_node")
[[ -n $cpus_per_task ]] && srun_cmd+=("--cpus-per-task=$cpus_per_task")
srun_cmd+=(--kill-on-bad-exit=1)
# Written with quote_words below, so the $VARIABLES are expanded by each task's bash -c.
process_flags='--coordinator_address="$COORDINATOR_ADDRESS" --num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"'
job=("$python" -m cnnjax.main "--config=$config" "--workdir=$workdir")
task="exec $(quote_words "${job[@]}") $process_flags"
((${#overrides[@]} + ${#extra[@]})) && task+=" $(quote_words ${overrides[@]+"${overrides[@]}"} ${extra[@]+"${extra[@]}"})"

batch_script() {
  local line
  printf '#!/bin/bash\n'
  printf '#SBATCH --job-name=%s\n' "$job_name"
  printf '#SBATCH --nodes=%s\n' "$nodes"
  printf '#SBATCH --ntasks-per-node=1\n'
  printf '#SBATCH --gpus-per-node=%s\n' "$gpus_per_node"
  [[ -z $cpus_per_task ]] || printf '#SBATCH --cpus-per-task=%s\n' "$cpus_per_task"
  [[ -z $partition ]] || printf '#SBATCH --partition=%s\n' "$partition"
  [[ -z $account ]] || printf '#SBATCH --account=%s\n' "$account"
  [[ -z $time_limit ]] || printf '#SBATCH --time=%s\n' "$time_limit"
  printf '#SBATCH --output=%%x-%%j.out\n'
  for line in ${sbatch_options[@]+"${sbatch_options[@]}"}; do printf '#SBATCH %s\n' "$line"; done
  cat <<EOF
# cnnjax on $nodes node(s) x $gpus_per_node GPU(s): one process per node, written by launch/gpu_slurm.sh.
set -eo pipefail
cd $(shell_quote "$ROOT")
EOF
  for line in ${setup_lines[@]+"${setup_lines[@]}"}; do printf '%s\n' "$line"; done
  cat <<EOF
set -u  # only now: setup lines (module load, activate) may read unset variables

# JAX's coordinator runs in process 0, on the first node of the allocation.
# (sed reads the whole list, so the pipe never breaks under pipefail, unlike head.)
COORDINATOR_HOST=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | sed -n 1p)
EOF
  if [[ -n $port ]]; then
    printf 'COORDINATOR_PORT=%s\n' "$port"
  else
    printf '%s\n' '# A port per job in 61440-65535 (as JAX'"'"'s own SLURM detection picks), so jobs sharing a node differ.' \
      'COORDINATOR_PORT=$((61440 + SLURM_JOB_ID % 4096))'
  fi
  cat <<EOF
export COORDINATOR_ADDRESS="\$COORDINATOR_HOST:\$COORDINATOR_PORT"
# Each process keeps all of its node's GPUs. Without this, jax.distributed.initialize
# under SLURM would keep only GPU number \$SLURM_LOCALID (one GPU per process).
export JAX_LOCAL_DEVICE_IDS=$device_ids

$(quote_words "${srun_cmd[@]}") bash -c $(shell_quote "$task")
EOF
}

submit=(sbatch "$script")
if ((DRY_RUN)); then
  printf '# sbatch script %s:\n' "$(shell_quote "$script")"
  batch_script
  printf '# submit:\n'
  quote_words "${submit[@]}"
  printf '\n'
else
  batch_script >"$script"
  printf 'Wrote %s\n' "$script" >&2
  run_cmd "${submit[@]}"
fi
