# Copyright (c) OpenMMLab. All rights reserved.
"""tools/benchmarks/*/dist_train.sh: CONFIG PRETRAIN GPUS [train.py args]."""
import os.path as osp
import subprocess
import sys

import pytest
import torch
from test_mmseg_transfer import tiny_cfg, write_ade20k

LAUNCHERS = [
    osp.join('tools', 'benchmarks', lib, 'dist_train.sh')
    for lib in ('mmpretrain', 'mmseg', 'mmdet')
]


@pytest.mark.parametrize('launcher', LAUNCHERS)
def test_launcher_refuses_missing_files(launcher, tmp_path, repo_root):
    config = osp.join('configs', 'benchmarks', 'mmseg',
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


def test_mmseg_launcher_trains_from_the_checkpoint(pretrained_checkpoint,
                                                   tmp_path, write_images,
                                                   run_tool):
    """One GPU (here: CPU) run; PRETRAIN reaches the backbone's init_cfg."""
    data_root = str(tmp_path / 'ade')
    write_ade20k(data_root, write_images)
    cfg = tiny_cfg('pretrain/not_this_one.pth', data_root,
                   str(tmp_path / 'unused'))
    config = str(tmp_path / 'tiny_upernet.py')
    cfg.dump(config)
    work_dir = str(tmp_path / 'work_dir')
    proc = run_tool(
        ['bash', LAUNCHERS[1], config, pretrained_checkpoint, '1',
         '--work-dir', work_dir],
        env=dict(PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert (f'StrictMAE: student encoder from {pretrained_checkpoint}'
            in log)
    assert 'loaded 52 / missing 16 / unexpected 2 / shape mismatch 0' in log
    last = torch.load(osp.join(work_dir, 'iter_1.pth'), map_location='cpu')
    assert last['meta']['iter'] == 1
