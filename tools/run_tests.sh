#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The project's test command: installs the "full" profile (mmcv with ops,
# mmseg, mmdet; replaces mmcv-lite; an environment with the full stack is
# used as it is), lints, then runs the pytest suite. Extra arguments go to
# pytest.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "${TOOLS_DIR}/install.sh" --profile full
source "${TOOLS_DIR}/python_env.sh"
cd "${EHM_REPO_ROOT}"
echo "[ehm_mm tests] ruff check"
"${EHM_PYTHON}" -m ruff check .
echo "[ehm_mm tests] pytest"
"${EHM_PYTHON}" -m pytest tests "$@"
