# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/benchmarks/*/dist_train.sh: CONFIG PRETRAIN GPUS [train.py args].

A real run of the mmseg launcher is in ``test_mmseg_transfer.py``.
"""
import os.path as osp
import subprocess

import pytest

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
LAUNCHERS = [
    osp.join(REPO_ROOT, 'tools', 'benchmarks', lib, 'dist_train.sh')
    for lib in ('mmpretrain', 'mmseg', 'mmdet')
]


@pytest.mark.parametrize('launcher', LAUNCHERS)
def test_launcher_refuses_missing_files(launcher, tmp_path, repo_root):
    config = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmseg',
                      'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    missing = str(tmp_path / 'missing.pth')
    for args, message in (([], 'usage:'), ([config, missing, '1'],
                                           f'{missing} does not exist'),
                          (['nope.py', missing, '1'], 'nope.py does not')):
        proc = subprocess.run(['bash', launcher, *args],
                              cwd=repo_root,
                              capture_output=True,
                              text=True)
        assert proc.returncode == 2
        assert message in proc.stderr
