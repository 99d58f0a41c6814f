# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Stock OpenMMLab tools run the demo config: nothing of ours launches it.

* mmpretrain's own ``tools/train.py`` (the copy the installed mmpretrain
  ships in ``.mim/tools``) trains the demo config from a folder outside
  the repository; ``custom_imports`` imports ehm_mm.
* the same tool trains a user's child config of ``ehm_mm::`` when the
  process imports ehm_mm first (mmengine reads ``_base_`` before it runs
  ``custom_imports``): ``python -c "import ehm_mm, runpy, sys; ..."``.
* ``mim train ehm_mm ehm_mae_vit-tiny_demo.py`` and ``mim test ehm_mm ...
  --checkpoint ...`` (openmim from the package index, ehm_mm from a
  non-editable install) find the config and the tools in
  ``ehm_mm/.mim``.

Each run is the demo shrunk to 1 epoch of 2 iterations on CPU.
"""
import os
import os.path as osp
import subprocess
import sys

import mmpretrain

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DEMO = osp.join(REPO_ROOT, 'configs', 'ehm_mae_vit-tiny_demo.py')


def small_demo(data_root: str) -> list:
    """``--cfg-options`` of a 2-iteration demo with data in ``data_root``."""
    return [
        '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.dataset.num_samples=8',
        'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.dataset.num_samples=100',
        'val_dataloader.num_workers=0', 'default_hooks.logger.interval=1',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}'
    ]


def run(args: list, cwd: str, pythonpath: str) -> str:
    """Run a command outside the repository; its output."""
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def test_mmpretrain_train_tool_runs_the_demo_config(tmp_path):
    train_py = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    assert osp.isfile(train_py)
    work_dir = str(tmp_path / 'work')
    output = run([
        sys.executable, train_py, DEMO, '--work-dir', work_dir,
        *small_demo(str(tmp_path / 'data'))
    ], str(tmp_path), REPO_ROOT)
    assert 'Epoch(train) [1][2/2]' in output
    assert 'hierarchy/best_iou' in output
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
    assert osp.isfile(osp.join(work_dir, 'evaluation_summary.json'))


#: How a stock tool runs with ehm_mm imported first (docs/en/get_started.md).
IMPORT_FIRST = ('import ehm_mm, runpy, sys; sys.argv = sys.argv[1:]; '
                "runpy.run_path(sys.argv[0], run_name='__main__')")


def test_mmpretrain_train_tool_runs_an_ehm_mm_child_config(tmp_path):
    train_py = osp.join(
        osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py')
    child = tmp_path / 'my_ehm_demo.py'
    child.write_text(
        "_base_ = 'ehm_mm::configs/ehm_mae_vit-tiny_demo.py'\n"
        "model = dict(masking=dict(schedule='cosine'))\n")
    # without ehm_mm imported first, mmengine cannot resolve `ehm_mm::`
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, train_py, str(child)],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert 'mmengine does not support to load ehm_mm config' in proc.stderr
    work_dir = str(tmp_path / 'work')
    output = run([
        sys.executable, '-c', IMPORT_FIRST, train_py,
        str(child), '--work-dir', work_dir,
        *small_demo(str(tmp_path / 'data'))
    ], str(tmp_path), REPO_ROOT)
    assert "schedule='cosine'" in output  # the config mmengine printed
    assert 'Epoch(train) [1][2/2]' in output
    assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))


def test_mim_train_and_test_the_demo_config(tmp_path, ehm_mm_wheel_target,
                                            openmim_target):
    pythonpath = os.pathsep.join([ehm_mm_wheel_target, openmim_target])
    installed = osp.join(ehm_mm_wheel_target, 'ehm_mm', '.mim')
    mim = [sys.executable, '-m', 'mim']
    work_dir = str(tmp_path / 'work')
    data = str(tmp_path / 'data')
    output = run([
        *mim, 'train', 'ehm_mm', 'ehm_mae_vit-tiny_demo.py', '--work-dir',
        work_dir, *small_demo(data)
    ], str(tmp_path), pythonpath)
    # the config and the tool of the install, found by mim
    assert osp.join(installed, 'configs', 'configs',
                    'ehm_mae_vit-tiny_demo.py') in output
    assert osp.join(installed, 'tools', 'train.py') in output
    assert 'Training finished successfully' in output
    checkpoint = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(checkpoint)

    output = run([
        *mim, 'test', 'ehm_mm', 'ehm_mae_vit-tiny_demo.py', '--checkpoint',
        checkpoint, '--work-dir',
        str(tmp_path / 'test'), '--cfg-options',
        'test_dataloader.dataset.num_samples=100',
        'test_dataloader.num_workers=0',
        f'test_dataloader.dataset.data_root={data}'
    ], str(tmp_path), pythonpath)
    assert osp.join(installed, 'tools', 'test.py') in output
    assert 'Epoch(test) [1/1]' in output and 'knn/top1' in output
    assert 'Testing finished successfully' in output
