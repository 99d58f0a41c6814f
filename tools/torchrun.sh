#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Run one of the tools with torchrun (PyTorch DDP), shared by
# tools/dist_train.sh and tools/dist_test.sh.
#   bash tools/torchrun.sh TOOL NUM_PROCESSES [TOOL arguments]
# TOOL is a script in tools/ (train.py, test.py, retrieval.py). Multi-node:
# set NNODES, NODE_RANK, MASTER_ADDR, PORT on every node. Without CUDA the
# processes run on CPU with the gloo backend.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash $0 TOOL NUM_PROCESSES [TOOL arguments]" >&2
  exit 2
fi
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOL="${TOOLS_DIR}/$1"
if [[ ! -f "${TOOL}" ]]; then
  echo "no tool ${TOOL}" >&2
  exit 2
fi

PYTHONPATH="${TOOLS_DIR}/..:${PYTHONPATH:-}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$2" \
    --master_port="${PORT:-29500}" \
    "${TOOL}" "${@:3}" --launcher pytorch
