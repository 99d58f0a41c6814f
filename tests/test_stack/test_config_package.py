# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Another project inherits our configs: ``_base_ = 'ehm_mm::configs/...'``.

From a temporary folder outside the repository, two child configs written
as a user's project would write them (one of the CPU demo, one of the
ImageNet fine-tuning benchmark, initialised from the first's checkpoint)
are loaded, built and trained a few iterations by a stock mmengine
``Runner``, with ehm_mm imported

* from the repository (a checkout on ``PYTHONPATH``),
* from an editable install (``pip install -e`` of a copy of the
  repository into a new virtualenv; the configs are read through the
  links in ``ehm_mm/.mim``), and
* from a non-editable ``pip install --target`` of the repository (a wheel
  built from a copy of it; the configs are read from the copies in
  ``<target>/ehm_mm/.mim``).
"""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DEMO_CHILD = """\
_base_ = 'ehm_mm::configs/ehm_mae_vit-tiny_demo.py'
data_root = {data!r}
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, num_samples=8))
val_dataloader = dict(
    num_workers=0, dataset=dict(data_root=data_root, num_samples=100))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
custom_hooks = [dict(type='EvaluationSummaryHook')]
"""
BENCHMARK = ('ehm_mm::configs/benchmarks/mmpretrain/'
             'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py')
BENCHMARK_CHILD = """\
_base_ = {base!r}
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=96, num_layers=4, num_heads=3,
                  feedforward_channels=384),
        img_size=64, patch_size=8,
        init_cfg=dict(checkpoint={checkpoint!r})),
    head=dict(num_classes=2, in_channels=96))
data_preprocessor = dict(num_classes=2)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(
        _delete_=True, type='CustomDataset', data_root={labelled!r},
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=64),
            dict(type='PackInputs'),
        ]))
optim_wrapper = dict(type='NonFiniteSkipOptimWrapper')
train_cfg = dict(max_epochs=1)
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
default_hooks = dict(logger=dict(interval=1))
"""
#: Loads each child config, says where ehm_mm and the bases came from,
#: trains it with a stock Runner; the demo child's checkpoint is the
#: benchmark child's initialisation.
TRAIN_CHILDREN = """\
import json, os, sys
import ehm_mm
from mmengine.config import Config
from mmengine.runner import Runner

report = dict(ehm_mm=ehm_mm.__file__, children={})
for path in sys.argv[1:]:
    cfg = Config.fromfile(path)
    cfg.work_dir = os.path.splitext(path)[0] + '_work'
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    runner.train()
    report['children'][path] = dict(
        bases=[line for line in cfg.text.splitlines()
               if line.endswith('.py') and '.mim' in line],
        iter=runner.iter,
        loss=float(runner.message_hub.log_scalars['train/loss'].current()),
        files=sorted(os.listdir(cfg.work_dir)))
print('REPORT ' + json.dumps(report))
"""


@pytest.fixture(scope='module')
def user_project(tmp_path_factory) -> str:
    """A project folder outside the repository with its data and configs."""
    root = tmp_path_factory.mktemp('my_project')
    rng = np.random.default_rng(0)
    for label in ('a', 'b'):
        folder = root / 'labelled' / label
        folder.mkdir(parents=True)
        for i in range(4):
            array = rng.integers(0, 255, size=(72, 80, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f'{label}_{i}.png')
    (root / 'train_children.py').write_text(TRAIN_CHILDREN)
    return str(root)


def write_children(project: str, name: str) -> list:
    """The two child configs of one run, in ``<project>/<name>/``."""
    folder = osp.join(project, name)
    os.makedirs(folder)
    demo = osp.join(folder, 'my_ehm_demo.py')
    with open(demo, 'w') as f:
        f.write(DEMO_CHILD.format(data=osp.join(project, 'shapes')))
    benchmark = osp.join(folder, 'my_finetune.py')
    with open(benchmark, 'w') as f:
        f.write(BENCHMARK_CHILD.format(
            base=BENCHMARK,
            checkpoint=osp.join(folder, 'my_ehm_demo_work', 'epoch_1.pth'),
            labelled=osp.join(project, 'labelled')))
    return [demo, benchmark]


def train_children(project: str, children: list, pythonpath: str,
                   python: str = sys.executable) -> dict:
    """Run the children in a fresh interpreter from the project folder."""
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [python, osp.join(project, 'train_children.py'), *children],
        cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith('REPORT ')]
    assert len(line) == 1, proc.stdout[-3000:]
    return json.loads(line[0][len('REPORT '):])


def check_report(report: dict, children: list, configs_root: str) -> None:
    demo, benchmark = children
    # every file read of ours, and none from elsewhere
    ours = [b for b in report['children'][demo]['bases']
            if 'mmpretrain' not in b]
    assert sorted(ours) == sorted(
        osp.join(configs_root, name) for name in (
            'ehm_mae_vit-tiny_demo.py', 'ehm_mae_vit-b.py',
            '_base_/ehm_mae.py', '_base_/ehm_runtime.py'))
    ours = [b for b in report['children'][benchmark]['bases']
            if '/mmpretrain/.mim/' not in b]
    assert sorted(ours) == sorted(
        osp.join(configs_root, name) for name in (
            'benchmarks/mmpretrain/'
            'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py',
            '_base_/ehm_benchmark.py', '_base_/ehm_runtime.py'))
    for child in children:
        result = report['children'][child]
        assert result['iter'] == 2 and np.isfinite(result['loss'])
        assert 'epoch_1.pth' in result['files']
    assert 'evaluation_summary.json' in report['children'][demo]['files']


def test_children_train_with_the_checkout(user_project):
    children = write_children(user_project, 'checkout')
    report = train_children(user_project, children, REPO_ROOT)
    assert report['ehm_mm'] == osp.join(REPO_ROOT, 'ehm_mm', '__init__.py')
    check_report(report, children,
                 osp.join(REPO_ROOT, 'ehm_mm', '.mim', 'configs', 'configs'))


def test_children_train_with_an_editable_install(user_project,
                                                 ehm_mm_editable_python):
    python, source = ehm_mm_editable_python
    children = write_children(user_project, 'editable')
    report = train_children(user_project, children, '', python)
    assert report['ehm_mm'] == osp.join(source, 'ehm_mm', '__init__.py')
    check_report(report, children,
                 osp.join(source, 'ehm_mm', '.mim', 'configs', 'configs'))


def test_children_train_with_a_wheel_install(user_project,
                                              ehm_mm_wheel_target):
    installed = osp.join(ehm_mm_wheel_target, 'ehm_mm', '.mim')
    # copies, not links into the source tree
    for path in (osp.join(installed, 'configs', 'configs', 'ehm_mae_vit-b.py'),
                 osp.join(installed, 'tools', 'train.py'),
                 osp.join(installed, 'model-index.yml')):
        assert osp.isfile(path) and not osp.islink(path), path
    assert not osp.islink(osp.join(installed, 'configs', 'configs'))

    children = write_children(user_project, 'wheel')
    report = train_children(user_project, children, ehm_mm_wheel_target)
    assert report['ehm_mm'] == osp.join(ehm_mm_wheel_target, 'ehm_mm',
                                        '__init__.py')
    check_report(report, children, osp.join(installed, 'configs', 'configs'))
