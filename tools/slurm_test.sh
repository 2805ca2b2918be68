#!/usr/bin/env bash
# Evaluation on a slurm cluster, one task per GPU (as mmpretrain's and mmdet's slurm_test.sh):
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments]
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] $0 PARTITION JOB_NAME CONFIG CHECKPOINT [tools/test.py arguments] (got $# of the 4 arguments)" >&2
  exit 2
fi
exec bash "$(dirname "$0")/slurm_run.sh" test.py "$1" "$2" "$3" "$4" "${@:5}"
