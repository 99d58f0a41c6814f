#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Idempotent installer for ehm_mm and its OpenMMLab stack.
#
# Installs into the active virtualenv / conda env; when none is active it
# creates (or reuses) `.venv/` in the repository root. Every step names itself
# and the script stops at the first failure.
#
# Pinned stack (see README "Install"):
#   torch 2.14.1 + torchvision 0.29.1, mmengine 0.10.7, mmcv 2.1.0 (built from
#   source WITH ops), mmpretrain 1.2.0, mmsegmentation 1.2.2, mmdet 3.3.0.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${EHM_TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${EHM_TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION="2.1.0"
MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export MAX_JOBS

step() { echo "[ehm_mm install] $*"; }
fail() { echo "[ehm_mm install] FAILED at step: $*" >&2; exit 1; }

# ---------------------------------------------------------------- python env
source "${REPO_ROOT}/tools/python_env.sh"
PY="${EHM_PYTHON}"
if [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
  step "using the active environment: ${VIRTUAL_ENV:-${CONDA_PREFIX}}"
else
  if [[ ! -x "${PY}" ]]; then
    step "creating ${REPO_ROOT}/.venv"
    python3 -m venv "${REPO_ROOT}/.venv" || fail "python3 -m venv .venv"
  fi
  step "using ${REPO_ROOT}/.venv"
fi
PIP=("${PY}" -m pip --disable-pip-version-check)

# A stamp records a finished install for this exact requirement set, so a
# second run is a quick check instead of a pip resolve.
STAMP_KEY="$(cat "${REPO_ROOT}/tools/install.sh" "${REPO_ROOT}/setup.py" \
  "${REPO_ROOT}/requirements/"*.txt | sha1sum | cut -c1-12)"
STAMP="$("${PY}" -c 'import sys; print(sys.prefix)')/.ehm_mm_install_${STAMP_KEY}"
if [[ -f "${STAMP}" ]] && "${PY}" -c 'import mmcv.ops, mmpretrain, mmseg, mmdet, ehm_mm' 2>/dev/null; then
  step "already installed (${STAMP})"
  exit 0
fi

# --------------------------------------------------------- build tooling
step "build tooling: pip, setuptools>=77.0.3,<81 (pkg_resources), wheel"
"${PIP[@]}" install -q --upgrade "pip" "setuptools>=77.0.3,<81" "wheel" "ninja" \
  || fail "install build tooling"

# ------------------------------------------------------------------ torch
step "torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}"
"${PIP[@]}" install -q "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
  || fail "install torch/torchvision"

# ------------------------------------------------------- mmcv with ops
mmcv_ok() {
  "${PY}" - <<PYEOF 2>/dev/null
import mmcv, mmcv.ops
from mmcv.ops import nms  # noqa: F401  (needs the compiled mmcv._ext)
assert mmcv.__version__ == '${MMCV_VERSION}', mmcv.__version__
PYEOF
}
if mmcv_ok; then
  step "mmcv ${MMCV_VERSION} with ops already importable"
else
  PYVER="$("${PY}" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  TORCH_TAG="$("${PY}" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
  WHEEL_DIR="${EHM_WHEEL_CACHE:-${HOME}/.cache/ehm_mm/wheels}/mmcv-${MMCV_VERSION}-torch${TORCH_TAG}-${PYVER}"
  mkdir -p "${WHEEL_DIR}"
  if ! ls "${WHEEL_DIR}"/mmcv-*.whl >/dev/null 2>&1; then
    step "building mmcv ${MMCV_VERSION} with ops from source (about 8 minutes on 2 cores)"
    BUILD_DIR="$(mktemp -d)"
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==${MMCV_VERSION}" -d "${BUILD_DIR}" \
      || fail "download the mmcv ${MMCV_VERSION} source"
    tar -xzf "${BUILD_DIR}"/mmcv-"${MMCV_VERSION}".tar.gz -C "${BUILD_DIR}" \
      || fail "unpack the mmcv source"
    SRC="${BUILD_DIR}/mmcv-${MMCV_VERSION}"
    # torch >= 2.6 headers require C++20.
    sed -i 's/-std=c++17/-std=c++20/g' "${SRC}/setup.py"
    # Build isolation would silently produce a wheel without ops.
    MMCV_WITH_OPS=1 FORCE_CUDA=0 "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
      "${SRC}" -w "${WHEEL_DIR}" || fail "build the mmcv wheel"
    rm -rf "${BUILD_DIR}"
  else
    step "reusing the mmcv wheel in ${WHEEL_DIR}"
  fi
  "${PIP[@]}" install -q --no-deps --force-reinstall "${WHEEL_DIR}"/mmcv-*.whl \
    || fail "install the mmcv wheel"
  # mmcv's own runtime requirements (without letting pip replace mmcv).
  "${PIP[@]}" install -q addict packaging Pillow pyyaml yapf opencv-python \
    || fail "install mmcv runtime requirements"
fi

# ------------------------------------------------- OpenMMLab + project
step "mmengine, mmpretrain, mmsegmentation, mmdet and the test/dev requirements"
"${PIP[@]}" install -q -r "${REPO_ROOT}/requirements/runtime.txt" \
  -r "${REPO_ROOT}/requirements/tests.txt" || fail "install requirements"
step "ehm_mm (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "${REPO_ROOT}" \
  || fail "install ehm_mm"

# ----------------------------------------------------------------- verify
step "verifying the stack"
mmcv_ok || fail "verify: mmcv ${MMCV_VERSION} with compiled ops (mmcv.ops.nms) is not importable"
"${PY}" - <<'PYEOF' || fail "verify: import the OpenMMLab stack and ehm_mm"
import mmengine, mmpretrain, mmseg, mmdet, torch, torchvision  # noqa: F401
import ehm_mm  # noqa: F401
print(f'torch {torch.__version__}, torchvision {torchvision.__version__}, '
      f'mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}')
PYEOF
touch "${STAMP}"
step "done"
