#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The Quick-start demo: installs the "pretrain" profile when nothing is
# installed yet (no compiler: torch, mmengine, mmpretrain, mmcv-lite; an
# environment with the full stack is used as it is), then pretrains a small
# EHM-MAE on the embedded SyntheticShapes data on CPU and prints where its
# pictures and numbers are.
#   bash tools/demo.sh [train.py options, e.g. --work-dir DIR]
set -euo pipefail
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "${TOOLS_DIR}/install.sh" --profile pretrain
source "${TOOLS_DIR}/python_env.sh"
cd "${EHM_REPO_ROOT}"
WORK_DIR="work_dirs/ehm_mae_vit-tiny_demo"
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--work-dir" ]]; then j=$((i + 1)); WORK_DIR="${!j}"; fi
done
# Two OpenMP threads fighting other processes for the cores train about 10x
# slower than one thread; on an idle machine all cores are faster.
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
  CORES="$(nproc)"
  if awk -v load="${LOAD}" -v cores="${CORES}" 'BEGIN { exit !(load >= cores - 0.5) }'; then
    export OMP_NUM_THREADS=1
    echo "[ehm_mm demo] load average ${LOAD} on ${CORES} cores: OMP_NUM_THREADS=1 (set it to override)"
  fi
fi
"${EHM_PYTHON}" tools/train.py configs/ehm_mae_vit-tiny_demo.py \
  --work-dir "${WORK_DIR}" "$@"
echo
echo "[ehm_mm demo] start / end numbers: ${WORK_DIR}/evaluation_summary.json"
cat "${WORK_DIR}/evaluation_summary.json"
echo
# The end numbers are the same for a given machine and thread count
# (docs/en/benchmarks_and_results.md#cpu-demo): say which count this was.
echo "[ehm_mm demo] OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset (torch: $("${EHM_PYTHON}" -c 'import torch; print(torch.get_num_threads())') threads)}"
echo
echo "[ehm_mm demo] mask-evolution pictures:"
find "${WORK_DIR}" -name 'ehm_hierarchy_*.png' | sort
