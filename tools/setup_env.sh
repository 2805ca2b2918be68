#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at .venv.
#
# The verified stack (see README "Install"): torch 2.14.1 + torchvision 0.29.1 from this machine's
# local wheel folders, mmcv 2.1.0 built from source with its C++ ops, mmengine 0.10.7, mmdet 3.3.0,
# mmpretrain 1.2.0 and pycocotools. Building mmcv takes 15-25 minutes on 2 cores, so the wheel is
# built once per machine and kept in a cache keyed by the torch version (a wheel built against
# another torch imports but crashes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv"
PY="${PYTHON:-python3}"
STAMP="${VENV}/.kw_mm_installed"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
WHEEL_CACHE="${KW_MM_WHEEL_CACHE:-${HOME}/.cache/kw_mm/wheels}/torch-${TORCH_VERSION}-py311"

log() { echo "[setup_env] $*"; }

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

if [[ ! -x "${VENV}/bin/python" ]]; then
  log "creating ${VENV}"
  "${PY}" -m venv "${VENV}"
fi
PIP=(pip_quiet)
# The machine's pip config lists local index folders that do not exist for every package; pip
# warns about each of them. Those warnings are noise: filter them, keep everything else.
pip_quiet() {
  "${VENV}/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
"${PIP[@]}" install -q --upgrade pip 'setuptools==80.9.0' wheel

if ! "${VENV}/bin/python" -c "import torch, torchvision; assert torch.__version__.startswith('${TORCH_VERSION}')" 2>/dev/null; then
  log "installing torch ${TORCH_VERSION} + torchvision ${TORCHVISION_VERSION} (local wheels, ~2 min)"
  "${PIP[@]}" install -q "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
fi

build_mmcv() {
  # mmcv 2.1.0's setup.py hard-codes -std=c++17 while torch 2.14's headers need C++20, and it
  # imports pkg_resources, so it is built from a patched sdist without build isolation.
  local work
  work="$(mktemp -d)"
  log "building mmcv ${MMCV_VERSION} with ops against torch ${TORCH_VERSION} (15-25 min, once per machine)"
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation --no-cache-dir -d "${work}" "mmcv==${MMCV_VERSION}"
  tar -xzf "${work}"/mmcv-${MMCV_VERSION}.tar.gz -C "${work}"
  sed -i 's/c++17/c++20/g' "${work}/mmcv-${MMCV_VERSION}/setup.py"
  "${PIP[@]}" install -q ninja
  mkdir -p "${WHEEL_CACHE}"
  (cd "${work}/mmcv-${MMCV_VERSION}" && export MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
     && "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "${work}/dist" .)
  # Publish atomically so a build that was interrupted never looks finished.
  cp "${work}"/dist/mmcv-*.whl "${WHEEL_CACHE}/.tmp.whl"
  mv "${WHEEL_CACHE}/.tmp.whl" "${WHEEL_CACHE}/$(basename "${work}"/dist/mmcv-*.whl)"
  rm -rf "${work}"
}

if ! "${VENV}/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '${MMCV_VERSION}'" 2>/dev/null; then
  if ! ls "${WHEEL_CACHE}"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
    build_mmcv
  else
    log "reusing cached mmcv wheel from ${WHEEL_CACHE}"
  fi
  "${PIP[@]}" install -q --no-deps "$(ls "${WHEEL_CACHE}"/mmcv-${MMCV_VERSION}-*.whl | head -n1)"
fi

log "installing OpenMMLab toolboxes and test requirements"
"${PIP[@]}" install -q -r "${ROOT}/requirements/runtime.txt" -r "${ROOT}/requirements/tests.txt"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "${ROOT}"
"${VENV}/bin/python" -c "import mmcv.ops, mmdet, mmpretrain, pycocotools, kw_mm; print('[setup_env] stack ok: torch', __import__('torch').__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmpretrain', mmpretrain.__version__)"
touch "${STAMP}"
