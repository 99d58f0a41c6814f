#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Sourced by the other scripts: sets EHM_PYTHON to the interpreter of the
# active virtualenv / conda env, or of the repository's `.venv/` otherwise
# (the environment `tools/install.sh` installs into).
EHM_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${VIRTUAL_ENV:-}" || -n "${CONDA_PREFIX:-}" ]]; then
  EHM_PYTHON="$(command -v python)"
else
  EHM_PYTHON="${EHM_REPO_ROOT}/.venv/bin/python"
fi
export EHM_REPO_ROOT EHM_PYTHON
