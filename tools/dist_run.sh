#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh and dist_test.sh:
#   bash tools/dist_run.sh SCRIPT NPROC [SCRIPT arguments]
# SCRIPT is a file in tools/ (train.py, test.py); it gets --launcher pytorch. With GPUs: one
# process per GPU (nccl). Without a GPU: NPROC CPU processes with the gloo backend (the tools
# switch env_cfg.dist_cfg.backend), so multi-process runs work on any machine.
# NNODES, NODE_RANK, PORT and MASTER_ADDR select multi-node runs as in mmpretrain/mmdet.
# The interpreter: tools/select_python.sh.
set -euo pipefail
SCRIPT=$1
NPROC=$2
DIR="$(cd "$(dirname "$0")" && pwd)"
source "${DIR}/select_python.sh"
if ! [[ "${NPROC}" =~ ^[1-9][0-9]*$ ]]; then
  echo "$(basename "$0"): the number of processes must be a positive integer, got '${NPROC}'" >&2
  exit 2
fi

PYTHONPATH="${DIR}/..${PYTHONPATH:+:${PYTHONPATH}}" \
"${PY}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="${NPROC}" \
    --master_port="${PORT:-29500}" \
    "${DIR}/${SCRIPT}" \
    "${@:3}" \
    --launcher pytorch
