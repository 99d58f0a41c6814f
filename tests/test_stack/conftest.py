# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Installs of ehm_mm (and openmim) the stack tests run from."""
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
#: What a wheel is built from (the rest of the repository is not needed).
PACKAGE_FILES = ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md',
                 'LICENSE', 'model-index.yml', 'requirements', 'ehm_mm',
                 'configs', 'tools')


def pip_install_target(target: str, *args: str) -> None:
    """``pip install --no-deps --target TARGET ARGS``, failing the test
    with pip's output when it fails."""
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--no-deps', '-q',
         '--target', target, *args],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def copy_package(source) -> str:
    """Copy the files a wheel is built from (links kept) to ``source``."""
    source.mkdir()
    for name in PACKAGE_FILES:
        src = osp.join(REPO_ROOT, name)
        if osp.isdir(src):
            shutil.copytree(src, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(src, source / name)
    return str(source)


@pytest.fixture(scope='session')
def ehm_mm_editable_python(tmp_path_factory) -> tuple:
    """A virtualenv with ``pip install -e`` of a copy of the package.

    The stack comes from this interpreter's ``site-packages`` (a path
    appended after the virtualenv's own, so its editable ehm_mm, if any,
    is not used).

    Returns:
        tuple[str, str]: The virtualenv's python and the package's copy.
    """
    root = tmp_path_factory.mktemp('ehm_mm_editable')
    source = copy_package(root / 'source')
    venv = root / 'venv'
    proc = subprocess.run([sys.executable, '-m', 'venv', str(venv)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    python = str(venv / 'bin' / 'python')
    site = subprocess.run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'
         ], capture_output=True, text=True, check=True).stdout.strip()
    with open(osp.join(site, 'zz_ehm_mm_stack.pth'), 'w') as f:
        f.write(sysconfig.get_path('purelib') + '\n')
    proc = subprocess.run(
        [python, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
         '--no-index', '-q', '-e', source],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return python, source


@pytest.fixture(scope='session')
def ehm_mm_wheel_target(tmp_path_factory) -> str:
    """ehm_mm installed with ``pip install --target`` (no ``-e``).

    Built from a copy of the package files, removed afterwards, so that
    nothing can be read from the repository through it.
    """
    root = tmp_path_factory.mktemp('ehm_mm_wheel')
    source = copy_package(root / 'source')
    target = str(root / 'target')
    pip_install_target(target, '--no-build-isolation', '--no-index',
                       source)
    shutil.rmtree(source)
    return target


@pytest.fixture(scope='session')
def openmim_target(tmp_path_factory) -> str:
    """openmim from the package index, as ``requirements/mim.txt`` says."""
    target = str(tmp_path_factory.mktemp('openmim'))
    pip_install_target(target, '-r',
                       osp.join(REPO_ROOT, 'requirements', 'mim.txt'))
    return target
