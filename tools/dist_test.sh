#!/usr/bin/env bash
# Multi-process evaluation with torchrun: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Without a GPU: GPUS CPU processes with the gloo backend (see dist_run.sh).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/dist_run.sh" test.py "$3" "$1" "$2" "${@:4}"
