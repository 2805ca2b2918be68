#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv.
#
# The verified stack (see docs/install.md): torch 2.14.1 + torchvision 0.29.1 from this machine's
# local wheel folders, mmcv 2.1.0 built from source with its C++ ops, mmengine 0.10.7, mmdet 3.3.0,
# mmpretrain 1.2.0, pycocotools, the test requirements and openmim. Building mmcv takes 15-25
# minutes on 2 cores, so the wheel is built once per machine and kept in a cache keyed by the
# torch version (a wheel built against another torch imports but crashes).
#
# The console gets one line per step (what, elapsed time) and a heartbeat during long steps;
# everything pip and the compiler print goes to the log file (.venv/setup.log), whose last lines
# are shown if a step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv"
PY="${PYTHON:-python3}"
STAMP="${VENV}/.kw_mm_installed"
LOG="${VENV}/setup.log"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
OPENMIM_VERSION=0.3.9
WHEEL_CACHE="${KW_MM_WHEEL_CACHE:-${HOME}/.cache/kw_mm/wheels}/torch-${TORCH_VERSION}-py311"
#: Seconds between the "still running" lines of a long step.
HEARTBEAT="${KW_MM_SETUP_HEARTBEAT:-120}"

# Up to date when the stamp is newer than every input of the install, the same list as the
# Makefile's stamp rule: a changed test requirement or a changed install step must re-run it.
STAMP_INPUTS=("${ROOT}/requirements/runtime.txt" "${ROOT}/requirements/tests.txt"
              "${ROOT}/setup.py" "${ROOT}/tools/setup_env.sh")
stamp_is_current() {
  [[ -f "${STAMP}" ]] || return 1
  local input
  for input in "${STAMP_INPUTS[@]}"; do
    [[ "${STAMP}" -nt "${input}" ]] || return 1
  done
}
if stamp_is_current; then
  exit 0
fi

mkdir -p "${VENV}"
: > "${LOG}"
elapsed() { printf '%d:%02d' $((SECONDS / 60)) $((SECONDS % 60)); }
log() { echo "[setup_env] $* [$(elapsed)]"; }

# Run a command with its output in the log. A long command gets a heartbeat line every
# HEARTBEAT seconds; a failing one shows the end of the log and stops the setup.
logged() {
  local what=$1
  shift
  echo "==== ${what}: $*" >> "${LOG}"
  "$@" >> "${LOG}" 2>&1 &
  local pid=$! next=$((SECONDS + HEARTBEAT))
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 0.2
    if ((SECONDS >= next)); then
      log "  ... still ${what} (log: ${LOG})"
      next=$((next + HEARTBEAT))
    fi
  done
  if ! wait "${pid}"; then
    echo "[setup_env] FAILED while ${what} [$(elapsed)]; last lines of ${LOG}:" >&2
    tail -n 40 "${LOG}" >&2
    exit 1
  fi
}
pip_install() { logged "$1" "${VENV}/bin/python" -m pip install "${@:2}"; }
has() { "${VENV}/bin/python" -c "$1" >> "${LOG}" 2>&1; }

echo "[setup_env] setting up ${VENV} (full log: ${LOG})"
if [[ ! -x "${VENV}/bin/python" ]]; then
  log "creating ${VENV}"
  logged "creating the venv" "${PY}" -m venv "${VENV}"
fi
log "pip, setuptools, wheel"
pip_install "updating pip" --upgrade pip 'setuptools==80.9.0' wheel

if ! has "import torch, torchvision; assert torch.__version__.startswith('${TORCH_VERSION}')"; then
  log "installing torch ${TORCH_VERSION} + torchvision ${TORCHVISION_VERSION} (local wheels, ~2 min)"
  pip_install "installing torch" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
fi

build_mmcv() {
  # mmcv 2.1.0's setup.py hard-codes -std=c++17 while torch 2.14's headers need C++20, and it
  # imports pkg_resources, so it is built from a patched sdist without build isolation.
  local work
  work="$(mktemp -d)"
  log "building mmcv ${MMCV_VERSION} with ops against torch ${TORCH_VERSION} (15-25 min, once per machine; log: ${LOG})"
  logged "downloading the mmcv sdist" "${VENV}/bin/python" -m pip download --no-deps \
    --no-binary :all: --no-build-isolation --no-cache-dir -d "${work}" "mmcv==${MMCV_VERSION}"
  tar -xzf "${work}"/mmcv-${MMCV_VERSION}.tar.gz -C "${work}"
  sed -i 's/c++17/c++20/g' "${work}/mmcv-${MMCV_VERSION}/setup.py"
  pip_install "installing ninja" ninja
  mkdir -p "${WHEEL_CACHE}"
  logged "building mmcv" env -C "${work}/mmcv-${MMCV_VERSION}" MMCV_WITH_OPS=1 FORCE_CUDA=0 \
    MAX_JOBS="$(nproc)" "${VENV}/bin/python" -m pip wheel --no-build-isolation --no-deps \
    --no-cache-dir -w "${work}/dist" .
  # Publish atomically so a build that was interrupted never looks finished.
  cp "${work}"/dist/mmcv-*.whl "${WHEEL_CACHE}/.tmp.whl"
  mv "${WHEEL_CACHE}/.tmp.whl" "${WHEEL_CACHE}/$(basename "${work}"/dist/mmcv-*.whl)"
  rm -rf "${work}"
  log "mmcv wheel cached in ${WHEEL_CACHE}"
}

if ! has "import mmcv, mmcv.ops; assert mmcv.__version__ == '${MMCV_VERSION}'"; then
  if ! ls "${WHEEL_CACHE}"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
    build_mmcv
  else
    log "reusing the cached mmcv wheel from ${WHEEL_CACHE}"
  fi
  pip_install "installing mmcv" --no-deps "$(ls "${WHEEL_CACHE}"/mmcv-${MMCV_VERSION}-*.whl | head -n1)"
fi

log "installing the OpenMMLab toolboxes and the test requirements"
pip_install "installing the requirements" -r "${ROOT}/requirements/runtime.txt" \
  -r "${ROOT}/requirements/tests.txt"
# openmim without its dependency opendatalab (dataset downloads, unused here): through openxlab it
# pins setuptools 60, which torch 2.14 and mmengine cannot work with. Its other dependencies are
# in requirements/tests.txt.
log "installing openmim ${OPENMIM_VERSION} and kw_mm (editable)"
pip_install "installing openmim" --no-deps "openmim==${OPENMIM_VERSION}"
pip_install "installing kw_mm" --no-deps --no-build-isolation -e "${ROOT}"
summary="$("${VENV}/bin/python" -c "import mmcv.ops, mmdet, mmpretrain, pycocotools, kw_mm, torch; print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmpretrain', mmpretrain.__version__)" 2>> "${LOG}")" || {
  echo "[setup_env] FAILED: the stack does not import; last lines of ${LOG}:" >&2
  tail -n 40 "${LOG}" >&2
  exit 1
}
log "stack ok: ${summary}"
touch "${STAMP}"
