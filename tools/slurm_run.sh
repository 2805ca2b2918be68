#!/usr/bin/env bash
# srun launcher shared by slurm_train.sh and slurm_test.sh:
#   bash tools/slurm_run.sh SCRIPT PARTITION JOB_NAME [SCRIPT arguments]
# One task per GPU: GPUS tasks in all (default 8), GPUS_PER_NODE per node (default 8; several
# nodes when GPUS is larger), CPUS_PER_TASK CPUs each (default 5, for the data loader workers).
# SRUN_ARGS passes further srun options (e.g. "--quotatype=auto" or "--time=72:00:00").
# SCRIPT (train.py, test.py in tools/) gets --launcher slurm: mmengine reads the rank, the world
# size and the first node's address from slurm's environment.
# The interpreter: tools/select_python.sh.
set -euo pipefail
SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
DIR="$(cd "$(dirname "$0")" && pwd)"
source "${DIR}/select_python.sh"
positive() {  # NAME VALUE: refuse anything but a positive integer, in one line
  if ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
    echo "$(basename "$0"): $1 must be a positive integer, got '$2'" >&2
    exit 2
  fi
}
GPUS=${GPUS:-8}
positive GPUS "${GPUS}"
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
positive GPUS_PER_NODE "${GPUS_PER_NODE}"
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
positive CPUS_PER_TASK "${CPUS_PER_TASK}"
# SRUN_ARGS is split into words on purpose (several options in one variable, as OpenMMLab's).
read -r -a EXTRA <<< "${SRUN_ARGS:-}"

PYTHONPATH="${DIR}/..${PYTHONPATH:+:${PYTHONPATH}}" \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres="gpu:${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    "${EXTRA[@]}" \
    "${PY}" -u "${DIR}/${SCRIPT}" "${@:4}" --launcher slurm
