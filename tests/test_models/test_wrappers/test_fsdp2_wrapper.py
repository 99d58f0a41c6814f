# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""FSDP2Wrapper / FSDP2Runner: 2 CPU processes (gloo) against DDP.

The tiny EHM-MAE of ``tests/data/configs/ehm_mae_tiny_cpu.py`` trains 4
iterations from the same initial weights (``load_from``) with the same
seed and data, once under DDP and once sharded by FSDP2; a third run
resumes the FSDP2 run's iteration-2 checkpoint (with activation
checkpointing on) and trains to 4, a fourth trains 2 iterations with bf16
mixed precision (``fsdp2_worker.py`` is one rank).
"""
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from fsdp2_runs import (
    REPO,
    assert_resumed_equals_straight,
    assert_same_checkpoint,
    load_records,
    max_diff,
    save_init,
    torchrun,
)
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmpretrain.registry import MODELS
from runner_utils import restoring_mmengine_globals

from ehm_mm.downstream.converters import convert_checkpoint
from ehm_mm.models.wrappers import (
    FSDP2Wrapper,
    check_sharded_launch,
    check_sharded_precision,
)

TINY = osp.join(REPO, 'tests', 'data', 'configs', 'ehm_mae_tiny_cpu.py')
# FSDP2 and DDP reduce the same two per-rank gradients (a sum of two is
# exact in either order), so on CPU they agree to the last bit; measured
# max |diff| 0.0 for losses, teacher and all weights. The tolerance leaves
# room for other reduction orders (more ranks, GPUs).
TOL = dict(atol=1e-6, rtol=1e-5)
ITERS = 4


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """DDP, FSDP2 and resumed-FSDP2 records, per rank, and the root."""
    root = str(tmp_path_factory.mktemp('fsdp2'))
    init = osp.join(root, 'init.pth')
    save_init(TINY, init)
    torchrun('ddp', root, osp.join(root, 'ddp'), str(ITERS),
              '--load-from', init)
    torchrun('fsdp2', root, osp.join(root, 'fsdp2'), str(ITERS),
              '--load-from', init)
    torchrun('fsdp2', root, osp.join(root, 'resumed'), str(ITERS),
              '--resume', osp.join(root, 'work_fsdp2', 'iter_2.pth'),
              '--checkpointing')
    torchrun('fsdp2', root, osp.join(root, 'bf16'), '2', '--load-from',
              init, '--bf16')
    records = {
        name: load_records(root, name)
        for name in ('ddp', 'fsdp2', 'resumed', 'bf16')
    }
    return records, root


def test_fsdp2_equals_ddp(runs):
    records, _ = runs
    for ddp, fsdp2 in zip(records['ddp'], records['fsdp2']):
        assert len(fsdp2['loss']) == len(ddp['loss']) == ITERS
        torch.testing.assert_close(torch.stack(fsdp2['loss']),
                                   torch.stack(ddp['loss']), **TOL)
        # masks (and their order) identical: same seeds, same teacher
        for key in ('mask', 'ids_restore'):
            for a, b in zip(fsdp2[key], ddp[key]):
                assert torch.equal(a, b)
        # the logged teacher distance (an all-reduce of local norms)
        assert len(fsdp2['teacher_distance']) == ITERS
        torch.testing.assert_close(torch.stack(fsdp2['teacher_distance']),
                                   torch.stack(ddp['teacher_distance']),
                                   **TOL)
        # validation after iterations 2 and 4 (the loop trained between)
        assert len(fsdp2['feature']) == len(ddp['feature']) > 0
        for a, b in zip(fsdp2['feature'], ddp['feature']):
            torch.testing.assert_close(a, b, **TOL)
        # some masks were cut from the teacher's trees, not all random
        assert any(not torch.equal(m, records['ddp'][0]['mask'][0])
                   for m in ddp['mask'][1:])
        state, ref = fsdp2['state_dict'], ddp['state_dict']
        assert list(state) == list(ref)  # the unsharded model's keys
        assert int(state['teacher.steps']) == ITERS
        teacher = [k for k in ref if k.startswith('teacher.module.')]
        for key in ref:
            torch.testing.assert_close(state[key], ref[key], **TOL)
        # the teacher moved: it is neither the student nor the start
        assert max_diff({k: state[k] for k in teacher}, {
            k: state[k.replace('teacher.module.', 'backbone.')]
            for k in teacher
        }) > 1e-4
    # both ranks hold the same whole model
    assert max_diff(records['fsdp2'][0]['state_dict'],
                     records['fsdp2'][1]['state_dict']) == 0


def test_resume_equals_straight_run(runs):
    records, root = runs
    assert_resumed_equals_straight(records['fsdp2'], records['resumed'], 2,
                                   TOL)
    # the checkpoint is the DDP run's: the same keys, and the optimizer
    # state whole (exp_avg of every parameter at its full shape)
    assert_same_checkpoint(osp.join(root, 'work_fsdp2', 'iter_4.pth'),
                           osp.join(root, 'work_ddp', 'iter_4.pth'), TOL)


def test_resume_on_three_ranks_equals_ddp(runs):
    """A checkpoint saved at 2 ranks resumes at 3 and goes on as DDP does.

    The checkpoint holds whole tensors, so 3 ranks shard it in three (dim
    0 of 48-wide tensors and of 3-channel ones alike: FSDP2 pads uneven
    shards). At 3 ranks the data split, the per-rank mask seeds and the
    gradient average are those of a 3-rank run, so the reference is DDP
    resumed at 3 ranks from the same iteration of the DDP run (whose
    checkpoint equals the FSDP2 one, test_resume_equals_straight_run).
    """
    _, root = runs
    for mode in ('ddp', 'fsdp2'):
        torchrun(mode, root, osp.join(root, f'{mode}_3ranks'), str(ITERS),
                 '--resume', osp.join(root, f'work_{mode}', 'iter_2.pth'),
                 nproc=3)
    ddp, fsdp2 = (load_records(root, f'{m}_3ranks', nproc=3)
                  for m in ('ddp', 'fsdp2'))
    for rank in range(3):
        assert len(fsdp2[rank]['loss']) == ITERS - 2
        torch.testing.assert_close(torch.stack(fsdp2[rank]['loss']),
                                   torch.stack(ddp[rank]['loss']), **TOL)
        for key in ('mask', 'ids_restore'):
            for a, b in zip(fsdp2[rank][key], ddp[rank][key]):
                assert torch.equal(a, b)
        state, ref = fsdp2[rank]['state_dict'], ddp[rank]['state_dict']
        assert list(state) == list(ref)
        assert int(state['teacher.steps']) == ITERS
        # three gradients are summed in another order than DDP's (a
        # reduce-scatter vs an all-reduce); as with accumulation AdamW
        # turns the rounding of the qkv biases' zero key part into
        # updates: measured max |diff| 4.3e-6 there, <= 6e-8 elsewhere,
        # teacher 1.5e-8, losses 1.2e-7
        for key in ref:
            torch.testing.assert_close(state[key], ref[key], atol=3e-5,
                                       rtol=0)
    # rank 2 is new: its masks are its own, not a copy of rank 0's or 1's
    assert not torch.equal(fsdp2[2]['mask'][0], fsdp2[0]['mask'][0])
    assert not torch.equal(fsdp2[2]['mask'][0], fsdp2[1]['mask'][0])


def test_gradient_accumulation_equals_ddp(runs):
    _, root = runs
    init = osp.join(root, 'init.pth')
    for mode in ('ddp', 'fsdp2'):  # 2 micro-batches per optimizer step
        torchrun(mode, root, osp.join(root, f'acc_{mode}'), str(ITERS),
                  '--load-from', init, '--accumulate', '2')
    for rank in range(2):
        ddp, fsdp2 = (torch.load(osp.join(root, f'acc_{m}.rank{rank}.pt'))
                      for m in ('ddp', 'fsdp2'))
        torch.testing.assert_close(torch.stack(fsdp2['loss']),
                                   torch.stack(ddp['loss']), **TOL)
        # the gradients are reduced once per window (no_sync) in another
        # order than DDP's; AdamW normalises the rounding of gradients that
        # are zero up to rounding (the qkv biases' key part) into updates:
        # measured max |diff| 7.9e-6, in the qkv biases
        for key, value in ddp['state_dict'].items():
            torch.testing.assert_close(fsdp2['state_dict'][key], value,
                                       atol=3e-5, rtol=0)


def test_bf16_mixed_precision(runs):
    records, _ = runs
    for fp32, bf16 in zip(records['fsdp2'], records['bf16']):
        assert len(bf16['loss']) == 2
        # bf16 compute: near, not equal (measured max |diff| 7.8e-4)
        diff = (torch.stack(bf16['loss']) - torch.stack(fp32['loss'][:2]))
        assert 0 < diff.abs().max() < 1e-2
        # the shards, hence the checkpoint, stay float32
        assert {v.dtype for k, v in bf16['state_dict'].items()
                if k != 'teacher.steps'} == {torch.float32}


@pytest.mark.parametrize('source', ['student', 'teacher'])
def test_checkpoint_converts_with_key_accounting(runs, tmp_path, source):
    _, root = runs
    src = osp.join(root, 'work_fsdp2', 'iter_4.pth')
    state = torch.load(src)['state_dict']
    prefix = dict(student='backbone.', teacher='teacher.module.')[source]
    encoder = {k[len(prefix):]: v for k, v in state.items()
               if k.startswith(prefix)}
    for consumer in ('mmpretrain', 'timm'):
        dst = str(tmp_path / f'{consumer}.pth')
        # raises unless the consumer loads it with full key accounting
        result = convert_checkpoint(src, dst, consumer, source=source)
        assert result.report.mismatched == []
        assert len(result.report.loaded) > 0
    written = torch.load(str(tmp_path / 'mmpretrain.pth'))['state_dict']
    assert {k[len('backbone.'):] for k in written} == set(encoder)
    for key, value in written.items():
        assert torch.equal(value, encoder[key[len('backbone.'):]])


def test_single_process_launch_is_refused(tmp_path):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'ehm_mae_vit-l_fsdp.py'))
    with pytest.raises(RuntimeError, match='tools/dist_train.sh'):
        check_sharded_launch(cfg, 'none')
    check_sharded_launch(cfg, 'pytorch')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/ehm_mae_vit-l_fsdp.py',
         '--work-dir', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'needs a distributed launch: use `bash tools/dist_train.sh' \
        in proc.stderr


def test_amp_is_refused(tmp_path):
    """FSDP2 does its own mixed precision; AMP on top of it is refused."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'ehm_mae_vit-l_fsdp.py'))
    check_sharded_precision(cfg)  # the config's plain optimizer wrapper
    with pytest.raises(ValueError,
                       match=r'--amp .*model_wrapper_cfg\.mixed_precision'):
        check_sharded_precision(cfg, amp_flag=True)
    for amp in ('AmpOptimWrapper', 'NonFiniteSkipAmpOptimWrapper'):
        cfg.optim_wrapper.type = amp
        with pytest.raises(ValueError, match=f'{amp} .*FSDP2Wrapper: '
                           r'FSDP2Wrapper does its own mixed precision'):
            check_sharded_precision(cfg)
    # without FSDP2 --amp is mmengine's AMP, as before
    check_sharded_precision(
        Config.fromfile(osp.join(REPO, 'configs', 'ehm_mae_vit-l.py')),
        amp_flag=True)
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/ehm_mae_vit-l_fsdp.py',
         '--amp', '--work-dir', str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert ('ValueError: --amp cannot be used with this config: '
            'FSDP2Wrapper does its own mixed precision') in proc.stderr


def test_runner_refuses_single_process(tmp_path):
    cfg = Config.fromfile(TINY)
    cfg.work_dir = str(tmp_path)
    cfg.runner_type = 'FSDP2Runner'
    cfg.model_wrapper_cfg = dict(type='FSDP2Wrapper')
    cfg.launcher = 'none'
    with restoring_mmengine_globals(), pytest.raises(
            RuntimeError, match='--launcher slurm'):
        RUNNERS.build(cfg)


def test_wrapper_needs_a_process_group():
    cfg = Config.fromfile(TINY)
    with pytest.raises(RuntimeError, match='needs a distributed launch'):
        FSDP2Wrapper(MODELS.build(cfg.model))


@pytest.fixture
def one_rank_group():
    """A 1-process gloo group for this test only."""
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_wrapper_refuses_other_models_and_online_teacher(one_rank_group):
    with pytest.raises(TypeError, match='shards an EHMMAE or an EHMSimMIM'):
        FSDP2Wrapper(torch.nn.Linear(2, 2))
    cfg = Config.fromfile(TINY)
    cfg.model.teacher = 'online'
    with pytest.raises(ValueError, match="does not shard teacher='online'"):
        FSDP2Wrapper(MODELS.build(cfg.model))
