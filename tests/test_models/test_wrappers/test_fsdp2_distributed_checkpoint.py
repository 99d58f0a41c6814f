# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""``checkpoint_format='distributed'``: sharded checkpoints of FSDP2 runs.

The tiny EHM-MAE of ``tests/data/configs/ehm_mae_tiny_cpu.py`` trains 4
iterations on 2 CPU processes (gloo) from the same initial weights, once
writing whole checkpoints (``'full'``) and once distributed ones
(``torch.distributed.checkpoint``); a third run resumes the distributed
iteration-2 checkpoint, a fourth keeps one checkpoint only; both formats'
iteration-2 checkpoints are also resumed on 3 processes.
``tools/model_converters/ehm_dcp2full.py`` turns the distributed
iteration-4 checkpoint into the whole one.
"""
import os
import os.path as osp
import sys

import pytest
import torch
from fsdp2_runs import (
    CONFIGS,
    REPO,
    assert_resumed_equals_straight,
    assert_same_checkpoint,
    load_records,
    save_init,
    torchrun,
)
from mmengine.config import Config

from ehm_mm.downstream.converters import convert_checkpoint
from ehm_mm.engine.fsdp2_runner import (
    checkpoint_format,
    remove_orphaned_folders,
)
from ehm_mm.models.wrappers.distributed_checkpoint import (
    META_KEY,
    distributed_to_full,
)

sys.path.insert(0, osp.join(REPO, 'tools', 'model_converters'))
from ehm_dcp2full import main as dcp2full  # noqa: E402

TINY = osp.join(CONFIGS, 'ehm_mae_tiny_cpu.py')
# Same model, data and arithmetic as the whole-checkpoint run: measured
# max |diff| 0.0 throughout.
TOL = dict(atol=1e-6, rtol=1e-5)
ITERS = 4


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Whole-format, distributed and resumed-distributed records; root."""
    root = str(tmp_path_factory.mktemp('fsdp2_dcp'))
    init = osp.join(root, 'init.pth')
    save_init(TINY, init)
    torchrun('fsdp2', root, osp.join(root, 'full'), str(ITERS),
             '--load-from', init)
    torchrun('fsdp2', root, osp.join(root, 'dcp'), str(ITERS),
             '--load-from', init, '--checkpoint-format', 'distributed')
    torchrun('fsdp2', root, osp.join(root, 'resumed'), str(ITERS),
             '--resume', osp.join(root, 'work_dcp', 'iter_2.pth'),
             '--checkpoint-format', 'distributed')
    torchrun('fsdp2', root, osp.join(root, 'pruned'), str(ITERS),
             '--load-from', init, '--checkpoint-format', 'distributed',
             '--max-keep-ckpts', '1')
    return {n: load_records(root, n)
            for n in ('full', 'dcp', 'resumed')}, root


def test_distributed_checkpoint_layout(runs):
    _, root = runs
    work = osp.join(root, 'work_dcp')
    whole = torch.load(osp.join(root, 'work_full', 'iter_4.pth'))
    for step in (2, 4):
        assert osp.isdir(osp.join(work, f'iter_{step}.dcp'))
        stub = torch.load(osp.join(work, f'iter_{step}.pth'))
        # no model or optimizer state in the file: it is in the folder
        assert len(stub['state_dict']) == 0
        assert stub['optimizer']['state'] == {}
        assert stub['optimizer']['param_groups'] == [
            dict(g) for g in whole['optimizer']['param_groups']]
        assert stub['meta'][META_KEY] == dict(
            folder=f'iter_{step}.dcp', keys=list(whole['state_dict']))
    assert not any(n.endswith('.tmp') for n in os.listdir(work))


def test_distributed_format_trains_as_full(runs):
    records, _ = runs
    for full, dcp in zip(records['full'], records['dcp']):
        torch.testing.assert_close(torch.stack(dcp['loss']),
                                   torch.stack(full['loss']), **TOL)
        for key, value in full['state_dict'].items():
            torch.testing.assert_close(dcp['state_dict'][key], value, **TOL)


def test_resume_from_distributed_equals_straight_run(runs):
    records, _ = runs
    assert_resumed_equals_straight(records['dcp'], records['resumed'], 2,
                                   TOL)
    for resumed in records['resumed']:
        assert int(resumed['state_dict']['teacher.steps']) == ITERS


def test_resume_on_three_ranks_equals_whole_checkpoint(runs):
    """The 2-rank distributed checkpoint resumes on 3 ranks (each rank
    reads its parts of the folder) exactly as the whole one does."""
    _, root = runs
    for name, fmt in (('full', 'full'), ('dcp', 'distributed')):
        torchrun('fsdp2', root, osp.join(root, f'{name}_3ranks'), str(ITERS),
                 '--resume', osp.join(root, f'work_{name}', 'iter_2.pth'),
                 '--checkpoint-format', fmt, nproc=3)
    whole, dcp = (load_records(root, f'{n}_3ranks', nproc=3)
                  for n in ('full', 'dcp'))
    for ref, run in zip(whole, dcp):  # measured max |diff| 0.0
        torch.testing.assert_close(torch.stack(run['loss']),
                                   torch.stack(ref['loss']), **TOL)
        for a, b in zip(run['mask'], ref['mask']):
            assert torch.equal(a, b)
        for key, value in ref['state_dict'].items():
            torch.testing.assert_close(run['state_dict'][key], value, **TOL)


def test_converter_writes_the_whole_checkpoint(runs, tmp_path, capsys):
    _, root = runs
    dst = str(tmp_path / 'whole.pth')
    dcp2full([osp.join(root, 'work_dcp', 'iter_4.pth'), dst])
    assert '81 model tensors, optimizer state: True' in capsys.readouterr().out
    whole = osp.join(root, 'work_full', 'iter_4.pth')
    # what checkpoint_format='full' wrote, key order included
    assert_same_checkpoint(dst, whole, TOL)
    converted, whole = torch.load(dst), torch.load(whole)
    assert converted['optimizer']['param_groups'] == \
        whole['optimizer']['param_groups']
    assert META_KEY not in converted['meta']
    assert converted['meta']['iter'] == whole['meta']['iter'] == ITERS
    # the ViT converters read it with full key accounting
    result = convert_checkpoint(dst, str(tmp_path / 'mmpretrain.pth'),
                                'mmpretrain')
    assert result.report.mismatched == [] and len(result.report.loaded) > 0


def test_converter_refuses_a_whole_checkpoint(runs, tmp_path):
    _, root = runs
    with pytest.raises(ValueError, match='already whole'):
        distributed_to_full(osp.join(root, 'work_full', 'iter_4.pth'),
                            str(tmp_path / 'x.pth'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        distributed_to_full(str(tmp_path / 'missing.pth'),
                            str(tmp_path / 'x.pth'))
    assert not osp.exists(tmp_path / 'x.pth')


def test_the_folders_of_deleted_checkpoints_are_removed(runs):
    _, root = runs  # max_keep_ckpts=1: the hook deleted iter_2.pth
    assert {n for n in os.listdir(osp.join(root, 'work_pruned'))
            if n.startswith('iter_')} == {'iter_4.pth', 'iter_4.dcp'}


def test_orphaned_folders_are_removed(tmp_path):
    for name in ('iter_2.dcp', 'iter_4.dcp', 'iter_6.dcp', 'notes.dcp.tmp'):
        (tmp_path / name).mkdir()
    for name in ('iter_4.pth', 'iter_6.pth', 'last_checkpoint'):
        (tmp_path / name).write_text('')
    removed = remove_orphaned_folders(str(tmp_path))
    assert removed == [str(tmp_path / 'iter_2.dcp')]
    assert sorted(os.listdir(tmp_path)) == [
        'iter_4.dcp', 'iter_4.pth', 'iter_6.dcp', 'iter_6.pth',
        'last_checkpoint', 'notes.dcp.tmp']


def test_checkpoint_format_option():
    cfg = Config(dict(runner_type='FSDP2Runner'))
    assert checkpoint_format(cfg) == 'full'
    cfg.checkpoint_format = 'distributed'
    assert checkpoint_format(cfg) == 'distributed'
    cfg.checkpoint_format = 'dcp'
    with pytest.raises(ValueError, match="checkpoint_format must be one of "
                       r"\('full', 'distributed'\), got 'dcp'"):
        checkpoint_format(cfg)
