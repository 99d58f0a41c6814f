#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Distributed evaluation with torchrun, see tools/torchrun.sh.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py options]
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py options]" >&2
  exit 2
fi
exec bash "$(dirname "$0")/torchrun.sh" test.py "$3" "$1" "$2" "${@:4}"
