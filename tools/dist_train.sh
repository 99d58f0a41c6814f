#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Distributed training with torchrun (PyTorch DDP), see tools/torchrun.sh.
#   bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash $0 CONFIG NUM_PROCESSES [train.py options]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/torchrun.sh" train.py "$2" "$1" "${@:3}"
