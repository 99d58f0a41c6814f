#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# CI check of the "pretrain" install profile alone, in a fresh virtualenv:
# `tools/install.sh --profile pretrain` (torch, torchvision, mmengine,
# mmpretrain, mmcv-lite; after the full install pip takes the wheels from
# its cache), then
#   1. the environment is the pretrain profile: mmcv-lite is the only mmcv
#      distribution, mmcv's compiled ops, mmseg and mmdet do not import;
#   2. the demo config trains a few iterations (2 epochs of 2 iterations);
#   3. a downstream config fails at once, naming the install command.
# tests/test_stack/test_pretrain_profile.py checks 2 and 3 in the pytest
# suite's own environment with those modules blocked.
#   bash tests/test_stack/pretrain_profile_ci.sh [VENV_DIR]   (default: a temp dir, removed)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRATCH="$(mktemp -d)"
VENV="${1:-${SCRATCH}/venv}"
if [[ $# -eq 0 ]]; then trap 'rm -rf "${SCRATCH}"' EXIT; fi
say() { echo "[pretrain profile CI] $*"; }
die() { echo "[pretrain profile CI] FAILED: $*" >&2; exit 1; }

SECONDS=0
[[ -x "${VENV}/bin/python" ]] || python3 -m venv "${VENV}" || die "python3 -m venv ${VENV}"
unset PYTHONPATH CONDA_PREFIX
export VIRTUAL_ENV="${VENV}" PATH="${VENV}/bin:${PATH}" OMP_NUM_THREADS=1
PY="${VENV}/bin/python"
cd "${REPO_ROOT}"
bash tools/install.sh --profile pretrain || die "tools/install.sh --profile pretrain"
INSTALL_S=${SECONDS}
say "install: ${INSTALL_S} s"

# 1. what is installed
"${PY}" - <<'PYEOF' || die "the environment is not the pretrain profile"
import importlib.metadata as md
import importlib.util

from ehm_mm.utils.stack import installed_profile, mmcv_distributions

assert installed_profile() == 'pretrain', installed_profile()
assert mmcv_distributions() == ['mmcv-lite 2.1.0'], mmcv_distributions()
for name in ('mmseg', 'mmdet'):
    assert importlib.util.find_spec(name) is None, name
assert importlib.util.find_spec('mmcv._ext') is None
for dist in ('mmsegmentation', 'mmdet', 'mmcv'):
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        continue
    raise AssertionError(f'{dist} is installed')
print('[pretrain profile CI] mmcv-lite 2.1.0 only; no mmcv._ext, mmseg, mmdet')
PYEOF

# 2. the demo config, a few iterations
DATA="${SCRATCH}/data"
WORK="${SCRATCH}/work"
LOG="${SCRATCH}/demo.log"
"${PY}" tools/train.py configs/ehm_mae_vit-tiny_demo.py --work-dir "${WORK}" \
  --cfg-options train_cfg.max_epochs=2 \
  train_dataloader.dataset.num_samples=128 \
  val_dataloader.dataset.num_samples=100 \
  train_dataloader.num_workers=0 train_dataloader.persistent_workers=False \
  val_dataloader.num_workers=0 default_hooks.logger.interval=1 \
  "train_dataloader.dataset.data_root=${DATA}" \
  "val_dataloader.dataset.data_root=${DATA}" > "${LOG}" 2>&1 \
  || { tail -40 "${LOG}"; die "the demo config did not train"; }
grep -E 'Epoch\(train\) +\[2\]\[2/2\].*mask_depth' "${LOG}" \
  || { tail -40 "${LOG}"; die "no log line of the last training iteration"; }
[[ -f "${WORK}/epoch_2.pth" && -f "${WORK}/evaluation_summary.json" ]] \
  || die "no checkpoint / evaluation summary in ${WORK}"
TRAIN_S=$((SECONDS - INSTALL_S))
say "demo config, 4 iterations: ${TRAIN_S} s"

# 3. a downstream config says what to install
for CONFIG in configs/benchmarks/mmseg/ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py \
              configs/benchmarks/mmdet/vitdet_mask-rcnn_vit-b-ehm_16xb4-lsj-100e_coco.py; do
  if "${PY}" tools/train.py "${CONFIG}" --work-dir "${SCRATCH}/downstream" > "${LOG}" 2>&1; then
    die "${CONFIG} ran on the pretrain profile"
  fi
  grep -q 'bash tools/install.sh --profile full' "${LOG}" \
    || { tail -20 "${LOG}"; die "${CONFIG}: no install instruction"; }
  ! grep -q 'ModuleNotFoundError' "${LOG}" \
    || { tail -20 "${LOG}"; die "${CONFIG}: failed on an import"; }
done
say "downstream configs name 'bash tools/install.sh --profile full'"
say "passed in ${SECONDS} s (install ${INSTALL_S} s, demo config ${TRAIN_S} s)"
