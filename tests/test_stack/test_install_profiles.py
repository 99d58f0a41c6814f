# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Install profiles: which stack a config needs and what a tool says.

``ehm_mm.utils.stack`` decides whether a config needs the ``full`` profile
(mmseg / mmdet with mmcv's compiled ops) and fails early, naming the
install command, when the environment has only the ``pretrain`` profile.
"""
import glob
import os.path as osp
import subprocess
import sys

import pytest

from ehm_mm.utils import stack
from ehm_mm.utils.stack import (
    INSTALL_FULL,
    StackError,
    check_config_stack,
    config_packages,
    requirement_actions,
)

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
MMSEG_CFG = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmseg',
                     'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
MMDET_CFG = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmdet',
                     'vitdet_mask-rcnn_vit-b-ehm_16xb4-lsj-100e_coco.py')


def test_shipped_configs_name_their_stack():
    assert config_packages(MMSEG_CFG) == {'mmseg'}
    assert config_packages(MMDET_CFG) == {'mmdet'}
    pretrain_side = (
        glob.glob(osp.join(REPO_ROOT, 'configs', '*.py')) +
        glob.glob(osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmpretrain',
                           '*.py')) +
        glob.glob(osp.join(REPO_ROOT, 'configs', 'benchmarks', 'retrieval',
                           '*.py')))
    assert len(pretrain_side) > 10
    for path in pretrain_side:
        assert config_packages(path) == set(), path


def test_config_packages_reads_local_bases_scopes_and_imports(tmp_path):
    (tmp_path / 'base_det.py').write_text("default_scope = 'mmdet'\n")
    (tmp_path / 'sub').mkdir()
    (tmp_path / 'sub' / 'child.py').write_text(
        "_base_ = ['../base_det.py']\nmodel = dict(type='MAE')\n")
    assert config_packages(str(tmp_path / 'sub' / 'child.py')) == {'mmdet'}

    (tmp_path / 'imports.py').write_text(
        "custom_imports = dict(imports=['ehm_mm.downstream.mmseg'])\n")
    assert config_packages(str(tmp_path / 'imports.py')) == {'mmseg'}

    (tmp_path / 'lazy.py').write_text(
        'from mmdet.models import MaskRCNN\nmodel = dict(type=MaskRCNN)\n')
    assert config_packages(str(tmp_path / 'lazy.py')) == {'mmdet'}

    (tmp_path / 'scoped_type.py').write_text(
        "model = dict(type='mmseg.EncoderDecoder')\n")
    assert config_packages(str(tmp_path / 'scoped_type.py')) == {'mmseg'}

    # Names that merely contain the package names do not count.
    (tmp_path / 'other.py').write_text(
        "work_dir = 'work_dirs/mmdetection_run'\nname = 'my_mmseg'\n"
        "_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-"
        "300e_in1k.py'\n")
    assert config_packages(str(tmp_path / 'other.py')) == set()

    (tmp_path / 'cfg.yaml').write_text("_base_: 'mmseg::mae/x.py'\n")
    assert config_packages(str(tmp_path / 'cfg.yaml')) == {'mmseg'}


def test_config_packages_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='config not found'):
        config_packages(str(tmp_path / 'nope.py'))


def test_check_config_stack_names_the_install_command(monkeypatch):
    """On a pretrain-profile environment (no mmseg, no mmcv._ext)."""
    present = {'mmdet'}
    monkeypatch.setattr(stack, 'module_available',
                        lambda name: name in present)
    with pytest.raises(StackError) as info:
        check_config_stack(MMSEG_CFG)
    message = str(info.value)
    assert MMSEG_CFG in message
    assert 'mmsegmentation (module mmseg)' in message
    assert "mmcv's compiled ops (mmcv._ext)" in message
    assert INSTALL_FULL in message
    # mmdet is there, mmcv's ops are not: still the full profile.
    with pytest.raises(StackError, match='lacks: mmcv'):
        check_config_stack(MMDET_CFG)
    # A pretraining config needs neither.
    check_config_stack(osp.join(REPO_ROOT, 'configs', 'ehm_mae_vit-b.py'))


def test_this_environment_is_the_full_profile():
    """The test suite runs on what ``tools/run_tests.sh`` installs."""
    assert stack.installed_profile() == 'full'
    assert [d.split()[0] for d in stack.mmcv_distributions()] == ['mmcv']
    check_config_stack(MMSEG_CFG)
    check_config_stack(MMDET_CFG)


def test_requirement_actions(tmp_path):
    import importlib.metadata
    pytest_version = importlib.metadata.version('pytest')
    torch_version = importlib.metadata.version('torch')
    req = tmp_path / 'req.txt'
    req.write_text(
        '# a comment\n'
        'pytest\n'
        'torch==0.0.1  # stack packages are kept, with a note\n'
        'pytest<1\n'
        'surely-not-an-installed-distribution-ehm\n'
        'ruff; python_version < "3"\n')
    assert requirement_actions([str(req)]) == [
        f'keep torch {torch_version} (pinned torch==0.0.1)',
        'install pytest<1',
        'install surely-not-an-installed-distribution-ehm',
    ]
    assert pytest_version  # installed, so the plain `pytest` line is quiet


def test_stack_script_runs_without_the_package(tmp_path):
    """``tools/install.sh`` runs the module as a script, from any cwd."""
    script = osp.join(REPO_ROOT, 'ehm_mm', 'utils', 'stack.py')
    proc = subprocess.run([sys.executable, script, 'report'],
                          cwd=str(tmp_path),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    profile, versions, location = proc.stdout.splitlines()
    assert profile == 'full'
    assert 'mmcv 2.1.0' in versions and '(mmcv 2.1.0)' in versions
    assert location != 'none' and not location.startswith('error')

    proc = subprocess.run([sys.executable, script, 'config', MMDET_CFG],
                          cwd=str(tmp_path),
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'the installed stack suffices' in proc.stdout
