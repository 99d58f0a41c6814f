#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Shared by tools/benchmarks/{mmpretrain,mmseg,mmdet}/dist_train.sh: train a
# downstream benchmark config from a pretrained checkpoint with
# tools/train.py (which runs mmpretrain, mmseg and mmdet configs alike).
#   bash tools/benchmarks/pretrained_train.sh CONFIG PRETRAIN GPUS [train.py options]
# Every config in configs/benchmarks/{mmpretrain,mmseg,mmdet}/ reads its
# checkpoint from model.backbone.init_cfg.checkpoint; PRETRAIN goes there.
# GPUS is the number of processes per node: 1 trains without a launcher,
# more start torchrun (DDP). Multi-node: set NNODES, NODE_RANK,
# MASTER_ADDR, PORT on every node.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash $0 CONFIG PRETRAIN GPUS [train.py options]" >&2
  exit 2
fi
CONFIG=$1 PRETRAIN=$2 GPUS=$3
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_DIR="$(cd "${BENCH_DIR}/.." && pwd)"
if [[ ! -f "${CONFIG}" ]]; then
  echo "config ${CONFIG} does not exist" >&2
  exit 2
fi
if [[ ! -f "${PRETRAIN}" ]]; then
  echo "pretrained checkpoint ${PRETRAIN} does not exist" >&2
  exit 2
fi
PRETRAIN_OPTION="model.backbone.init_cfg.checkpoint=${PRETRAIN}"

if [[ "${GPUS}" -le 1 && "${NNODES:-1}" -le 1 ]]; then
  PYTHON=${PYTHON:-python}
  PYTHONPATH="${TOOLS_DIR}/..:${PYTHONPATH:-}" \
  "${PYTHON}" "${TOOLS_DIR}/train.py" "${CONFIG}" "${@:4}" \
    --cfg-options "${PRETRAIN_OPTION}"
else
  bash "${TOOLS_DIR}/dist_train.sh" "${CONFIG}" "${GPUS}" "${@:4}" \
    --cfg-options "${PRETRAIN_OPTION}"
fi
