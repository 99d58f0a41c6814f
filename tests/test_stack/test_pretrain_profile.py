# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The demo config on what the ``pretrain`` profile has, end to end.

The ``pretrain`` install profile has mmcv-lite instead of mmcv with ops
and no mmseg / mmdet. mmcv-lite is mmcv's own source built without the
compiled extension, so this environment is reproduced here by running the
tools in a subprocess whose import system does not see ``mmseg``, ``mmdet``
or ``mmcv._ext`` (a ``sitecustomize`` wraps the path finder: an import
raises ``ModuleNotFoundError`` and ``find_spec`` returns None, as when the
files are not there). CI also installs the real profile
into a fresh virtualenv and runs the same checks
(``tests/test_stack/pretrain_profile_ci.sh``).
"""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmpretrain.models import MAEViT

from ehm_mm.utils.stack import INSTALL_FULL

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
BLOCKED = ('mmseg', 'mmdet', 'mmcv._ext')
SITECUSTOMIZE = f'''
import sys
from importlib.machinery import PathFinder

BLOCKED = {BLOCKED!r}


class _PretrainProfile:
    """The path finder, blind to what the pretrain profile lacks."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in BLOCKED):
            return None  # as if the files were not there
        return PathFinder.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(PathFinder, attr)


sys.meta_path[sys.meta_path.index(PathFinder)] = _PretrainProfile()
'''

# The demo config, a few iterations on fewer images (2 per epoch).
DEMO_FEW_ITERS = [
    'train_cfg.max_epochs=2',
    'train_dataloader.dataset.num_samples=128',
    'val_dataloader.dataset.num_samples=100',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.num_workers=0',
    'default_hooks.logger.interval=1',
]


@pytest.fixture(scope='module')
def run_pretrain_profile(tmp_path_factory):
    """Run a command in a subprocess shaped like the pretrain profile."""
    site = tmp_path_factory.mktemp('pretrain_profile_site')
    (site / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(site), REPO_ROOT]),
        OMP_NUM_THREADS='1')

    def _run(args):
        return subprocess.run([sys.executable] + args,
                              cwd=REPO_ROOT,
                              env=env,
                              capture_output=True,
                              text=True,
                              timeout=900)

    return _run


def test_the_profile_is_pretrain(run_pretrain_profile):
    proc = run_pretrain_profile(['ehm_mm/utils/stack.py', 'report'])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == 'pretrain'
    proc = run_pretrain_profile([
        '-c', 'import importlib.util as u, pkgutil; '
        "print(u.find_spec('mmseg'), pkgutil.find_loader('mmcv._ext')); "
        'import mmdet'
    ])
    assert proc.stdout.split() == ['None', 'None']
    assert "No module named 'mmdet'" in proc.stderr


def test_downstream_config_says_what_to_install(run_pretrain_profile,
                                                 tmp_path):
    mmdet_cfg = ('configs/benchmarks/mmdet/'
                 'vitdet_mask-rcnn_vit-b-ehm_16xb4-lsj-100e_coco.py')
    proc = run_pretrain_profile(
        ['tools/train.py', mmdet_cfg, '--work-dir', str(tmp_path)])
    assert proc.returncode != 0
    assert 'StackError' in proc.stderr
    assert INSTALL_FULL in proc.stderr
    assert "mmdet (module mmdet), mmcv's compiled ops (mmcv._ext)" in (
        proc.stderr)
    # It failed before mmengine parsed the config or imported mmdet.
    assert 'ModuleNotFoundError' not in proc.stderr
    assert not os.listdir(tmp_path)

    mmseg_cfg = ('configs/benchmarks/mmseg/'
                 'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
    proc = run_pretrain_profile(['ehm_mm/utils/stack.py', 'config', mmseg_cfg])
    assert proc.returncode == 1
    assert 'mmsegmentation (module mmseg)' in proc.stderr
    assert INSTALL_FULL in proc.stderr


def test_demo_config_trains(run_pretrain_profile, tmp_path):
    data = tmp_path / 'data'
    work_dir = tmp_path / 'work'
    options = DEMO_FEW_ITERS + [
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
    ]
    proc = run_pretrain_profile([
        'tools/train.py', 'configs/ehm_mae_vit-tiny_demo.py', '--work-dir',
        str(work_dir), '--cfg-options'
    ] + options)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert re.search(r'Epoch\(train\)\s+\[2\]\[2/2\]', log), log[-3000:]
    assert 'mask_depth' in log
    assert osp.isfile(work_dir / 'epoch_2.pth')
    assert osp.isfile(work_dir / 'evaluation_summary.json')


def test_converters_say_what_to_install(run_pretrain_profile, tmp_path):
    """The mmseg and timm converters check with mmseg / mmdet backbones:
    on the pretrain profile they stop before converting, naming the full
    install, instead of failing on an import."""
    torch.manual_seed(0)
    encoder = MAEViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=32,
        patch_size=8).state_dict()
    src = tmp_path / 'ehm.pth'
    torch.save(
        dict(state_dict={f'backbone.{k}': v
                         for k, v in encoder.items()}), src)
    for name, package in (('ehm2mmseg', 'mmsegmentation (module mmseg)'),
                          ('ehm2timm', 'mmdet (module mmdet)')):
        dst = tmp_path / f'{name}.pth'
        proc = run_pretrain_profile(
            [f'tools/model_converters/{name}.py',
             str(src), str(dst)])
        assert proc.returncode != 0
        assert 'StackError' in proc.stderr, proc.stderr[-3000:]
        assert package in proc.stderr
        assert INSTALL_FULL in proc.stderr
        assert 'ModuleNotFoundError' not in proc.stderr
        assert not dst.exists()
