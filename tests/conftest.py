# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Fixtures shared by the whole test suite."""
import os
import os.path as osp
import subprocess
import sys
from typing import Callable, List

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..'))


@pytest.fixture
def repo_root() -> str:
    """Absolute path of the repository root."""
    return REPO_ROOT


@pytest.fixture
def image_folder(tmp_path) -> str:
    """A folder of 8 small random RGB PNG images."""
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        array = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f'img_{i}.png')
    return str(folder)


def _run_tool(args: List[str],
              timeout: int = 900,
              env: dict = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    full_env.update(env or {})
    proc = subprocess.run(
        args, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
        timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(args)} exited {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-4000:]}\n'
            f'--- stderr ---\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def run_tool() -> Callable[..., subprocess.CompletedProcess]:
    """Run a command from the repository root with this interpreter's env.

    Usage: ``run_tool([sys.executable, 'tools/train.py', cfg, ...])``.
    Fails the test with the command's output when it exits non-zero.
    """
    return _run_tool


@pytest.fixture
def python() -> str:
    """The interpreter running the tests (the project's environment)."""
    return sys.executable
