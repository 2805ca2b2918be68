#!/usr/bin/env bash
# Training on a slurm cluster, one task per GPU (as mmpretrain's and mmdet's slurm_train.sh):
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments]
# e.g. GPUS=8 bash tools/slurm_train.sh gpu kw1x-r50 configs/kw1x-resnet50_8xb512-300e_in1k.py \
#          work_dirs/kw1x-r50 --auto-scale-lr --cfg-options data_root=/data/imagenet
set -euo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] $0 PARTITION JOB_NAME CONFIG WORK_DIR [tools/train.py arguments] (got $# of the 4 arguments)" >&2
  exit 2
fi
exec bash "$(dirname "$0")/slurm_run.sh" train.py "$1" "$2" "$3" --work-dir "$4" "${@:5}"
