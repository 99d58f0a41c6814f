#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Train a configs/benchmarks/mmseg/ config from a pretrained checkpoint.
#   bash tools/benchmarks/mmseg/dist_train.sh CONFIG PRETRAIN GPUS [train.py options]
# PRETRAIN: see the config's comment for the checkpoint formats it reads.
# Options after GPUS go to tools/train.py (--work-dir, --resume,
# --cfg-options, ...); PRETRAIN is added to the --cfg-options.
set -euo pipefail
exec bash "$(cd "$(dirname "$0")/.." && pwd)/pretrained_train.sh" "$@"
