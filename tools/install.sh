#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Idempotent installer for ehm_mm and its OpenMMLab stack, in two profiles.
#   bash tools/install.sh [--profile full|pretrain]
#
#   pretrain  torch 2.14.1 + torchvision 0.29.1, mmengine 0.10.7,
#             mmpretrain 1.2.0 and mmcv-lite 2.1.0 (pure Python: no
#             compiler). Pretraining, the demo, mmpretrain fine-tuning.
#             About 2-3 minutes (mostly downloading torch).
#   full      (the default) the same with mmcv 2.1.0 built from source WITH
#             its compiled ops instead of mmcv-lite, plus mmsegmentation
#             1.2.2, mmdet 3.3.0, faiss-cpu and the test requirements.
#             About 20 minutes the first time on 2 cores (compiling mmcv).
#
# Installs into the active virtualenv / conda env; when none is active it
# creates (or reuses) `.venv/` in the repository root. An environment that
# already has the profile's stack (or the full one) is used as it is: only
# missing pure-Python requirements and ehm_mm itself are added. Going from
# pretrain to full uninstalls mmcv-lite before installing mmcv (both provide
# the `mmcv` module) and verifies that mmcv with ops is the active one.
# Every step names itself and the script stops at the first failure.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${EHM_TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${EHM_TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION="2.1.0"
MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export MAX_JOBS

step() { echo "[ehm_mm install] $*"; }
fail() { echo "[ehm_mm install] FAILED at step: $*" >&2; exit 1; }

PROFILE="full"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --profile) [[ $# -ge 2 ]] || fail "--profile needs a value (full or pretrain)"
               PROFILE="$2"; shift 2 ;;
    --profile=*) PROFILE="${1#--profile=}"; shift ;;
    -h|--help) sed -n '3,21p' "${BASH_SOURCE[0]}" | cut -c3-; exit 0 ;;
    *) echo "[ehm_mm install] unknown argument '$1' (usage: bash tools/install.sh [--profile full|pretrain])" >&2
       exit 2 ;;
  esac
done
if [[ "${PROFILE}" != "full" && "${PROFILE}" != "pretrain" ]]; then
  echo "[ehm_mm install] --profile must be 'full' or 'pretrain', got '${PROFILE}'" >&2
  exit 2
fi

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
# Standard library only: runs before mmengine is installed. From / so that a
# checkout in the working directory does not shadow what is installed.
stack() { (cd / && "${PY}" "${REPO_ROOT}/ehm_mm/utils/stack.py" "$@"); }

REQUIREMENTS=("${REPO_ROOT}/requirements/pretrain.txt")
if [[ "${PROFILE}" == "full" ]]; then
  REQUIREMENTS+=("${REPO_ROOT}/requirements/downstream.txt"
                 "${REPO_ROOT}/requirements/tests.txt")
fi

# REPORT: the profile found, a line of versions, where ehm_mm imports from.
read_report() {
  REPORT="$(stack report)" || fail "$1: ehm_mm/utils/stack.py report"
  HAVE="$(sed -n 1p <<< "${REPORT}")"
  VERSIONS="$(sed -n 2p <<< "${REPORT}")"
  EHM_MM_AT="$(sed -n 3p <<< "${REPORT}")"
}
install_ehm_mm() {
  if [[ "${EHM_MM_AT}" == "${REPO_ROOT}" ]]; then
    step "ehm_mm: imports from ${REPO_ROOT}"
  else
    step "ehm_mm (editable; ehm_mm imported from: ${EHM_MM_AT})"
    "${PIP[@]}" install -q --no-deps --no-build-isolation -e "${REPO_ROOT}" \
      || fail "install ehm_mm"
  fi
}
# Uninstall every installed distribution that provides `mmcv` ($1: why).
uninstall_mmcv_dists() {
  local dist
  for dist in $(stack mmcv-dists | cut -d' ' -f1); do
    step "uninstalling ${dist} ($1)"
    "${PIP[@]}" uninstall -q -y "${dist}" || fail "uninstall ${dist}"
  done
}
mmcv_full_ok() {
  "${PY}" - <<PYEOF 2>/dev/null
import importlib.metadata as md
import mmcv
from mmcv.ops import nms  # noqa: F401  (needs the compiled mmcv._ext)
assert mmcv.__version__ == '${MMCV_VERSION}', mmcv.__version__
assert md.version('mmcv') == '${MMCV_VERSION}'
for other in ('mmcv-lite', 'mmcv-full'):
    try:
        md.version(other)
    except md.PackageNotFoundError:
        continue
    raise AssertionError(other + ' is installed too')
PYEOF
}

# ------------------------------------------- use an installed stack as it is
HAVE="none"
EHM_MM_AT="none"
if [[ -x "${PY}" ]]; then
  read_report "find the installed stack"
  step "found: ${HAVE} (${VERSIONS}); ehm_mm: ${EHM_MM_AT}"
fi
if [[ "${HAVE}" == "full" || ( "${PROFILE}" == "pretrain" && "${HAVE}" == "pretrain" ) ]]; then
  step "the ${HAVE} stack is installed: using it as it is (profile ${PROFILE} requested)"
  ACTIONS="$(stack requirements "${REQUIREMENTS[@]}")" || fail "check the requirement files"
  MISSING=()
  while read -r action req; do
    case "${action}" in
      install) MISSING+=("${req}") ;;
      keep) step "keeping ${req}" ;;
    esac
  done <<< "${ACTIONS}"
  if [[ ${#MISSING[@]} -gt 0 ]]; then
    step "missing requirements: ${MISSING[*]}"
    "${PIP[@]}" install -q "${MISSING[@]}" || fail "install ${MISSING[*]}"
  fi
  if [[ "${EHM_MM_AT}" != "${REPO_ROOT}" ]]; then
    install_ehm_mm
    read_report "verify"
    [[ "${EHM_MM_AT}" == "${REPO_ROOT}" ]] || fail "verify: ehm_mm imports from ${EHM_MM_AT}, not ${REPO_ROOT}"
  fi
  step "done in ${SECONDS} s (profile ${HAVE}, used as it was)"
  exit 0
fi
step "installing the ${PROFILE} profile"

# --------------------------------------------------------- build tooling
TOOLING=("pip" "setuptools>=77.0.3,<81" "wheel")
[[ "${PROFILE}" == "full" ]] && TOOLING+=("ninja")
step "build tooling: ${TOOLING[*]} (setuptools keeps pkg_resources for mmengine)"
"${PIP[@]}" install -q --upgrade "${TOOLING[@]}" || fail "install build tooling"

# ------------------------------------- torch, mmengine, mmpretrain (+ lite)
PRETRAIN=("torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
          -r "requirements/pretrain.txt")
if [[ "${PROFILE}" == "pretrain" ]]; then
  if (cd / && "${PY}" -c 'import mmcv' 2>/dev/null); then
    step "mmcv is importable ($(stack mmcv-dists | paste -sd, -)): kept"
  else
    uninstall_mmcv_dists "broken: mmcv does not import"
    PRETRAIN+=("mmcv-lite==${MMCV_VERSION}")
  fi
fi
step "${PRETRAIN[*]}"
(cd "${REPO_ROOT}" && "${PIP[@]}" install -q "${PRETRAIN[@]}") \
  || fail "install torch, mmengine, mmpretrain"

# ------------------------------------------------------- mmcv with ops
if [[ "${PROFILE}" == "full" ]]; then
  if mmcv_full_ok; then
    step "mmcv ${MMCV_VERSION} with ops already installed"
  else
    # mmcv-lite and mmcv install the same files; installing one over the
    # other would leave two owners of `mmcv/`. Remove every one first.
    uninstall_mmcv_dists "replaced by mmcv ${MMCV_VERSION} with ops"
    PYVER="$("${PY}" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
    TORCH_TAG="$("${PY}" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
    WHEEL_DIR="${EHM_WHEEL_CACHE:-${HOME}/.cache/ehm_mm/wheels}/mmcv-${MMCV_VERSION}-torch${TORCH_TAG}-${PYVER}"
    mkdir -p "${WHEEL_DIR}"
    if ! ls "${WHEEL_DIR}"/mmcv-*.whl >/dev/null 2>&1; then
      step "building mmcv ${MMCV_VERSION} with ops from source (about 20 minutes on 2 cores)"
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
  step "requirements/downstream.txt (mmsegmentation, mmdet, ...) and requirements/tests.txt"
  "${PIP[@]}" install -q -r "${REPO_ROOT}/requirements/downstream.txt" \
    -r "${REPO_ROOT}/requirements/tests.txt" || fail "install requirements"
fi

install_ehm_mm

# ----------------------------------------------------------------- verify
step "verifying the ${PROFILE} stack"
read_report "verify"
if [[ "${PROFILE}" == "full" ]]; then
  mmcv_full_ok || fail "verify: mmcv ${MMCV_VERSION} (the only mmcv distribution) with compiled ops (mmcv.ops.nms) is not importable"
  [[ "${HAVE}" == "full" ]] || fail "verify: the full stack does not import (found: ${HAVE})"
else
  [[ "${HAVE}" == "pretrain" || "${HAVE}" == "full" ]] \
    || fail "verify: torch, torchvision, mmengine, mmcv, mmpretrain do not import"
fi
[[ "${EHM_MM_AT}" == "${REPO_ROOT}" ]] || fail "verify: ehm_mm imports from ${EHM_MM_AT}, not ${REPO_ROOT}"
step "${VERSIONS}"
step "done in ${SECONDS} s (profile ${PROFILE})"
