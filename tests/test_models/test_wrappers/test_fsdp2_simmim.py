# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""FSDP2Wrapper on EHM-SimMIM (ViT and Swin): 2 CPU processes against DDP.

The tiny EHM-SimMIM ViT of ``tests/data/configs/ehm_simmim_tiny_cpu.py``
(attention affinity, the gradient norm clipped at every step) and
the tiny Swin of ``ehm_simmim_swin_tiny_cpu.py`` (feature affinity) train
4 iterations from the same initial weights (``load_from``) with the same
seed and data, once under DDP and once sharded by FSDP2; a third run
resumes the FSDP2 run's iteration-2 checkpoint with activation
checkpointing on and trains to 4 (``fsdp2_worker.py`` is one rank).
"""
import copy
import os.path as osp

import pytest
import torch
from fsdp2_runs import (
    CONFIGS,
    REPO,
    assert_resumed_equals_straight,
    assert_same_checkpoint,
    load_records,
    max_diff,
    save_init,
    torchrun,
)
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

from ehm_mm.downstream import account_keys, load_encoder

# FSDP2 and DDP reduce the same two per-rank gradients (bit-equal on CPU,
# as for EHM-MAE), but the clipped norm sums the shards' squared norms in
# another order than DDP's whole-gradient norm, so the clip factor differs
# in its last bits, which AdamW turns into updates mostly in the qkv biases
# (whose key part has a gradient of zero up to rounding). Measured FSDP2 vs
# DDP, ViT / Swin: losses 1.2e-7 / 6e-8, logged teacher distance 3.7e-9 /
# 7.5e-9, weights 1.3e-6 / 3.2e-7, validation features 3.0e-7 / 5.3e-6;
# resumed vs straight (both FSDP2): 0.0.
TOL = dict(atol=1e-6, rtol=1e-5)
CLIPPED_TOL = dict(atol=3e-5, rtol=0)  # weights and features, vs DDP
ITERS = 4
MODELS_UNDER_TEST = {
    'simmim': osp.join(CONFIGS, 'ehm_simmim_tiny_cpu.py'),
    'simmim-swin': osp.join(CONFIGS, 'ehm_simmim_swin_tiny_cpu.py'),
}
FINETUNE = {
    'simmim': 'maskfeat/benchmarks/vit-base-p16_ehm-pre_8xb256-coslr-100e_'
    'in1k.py',
    'simmim-swin': 'simmim/benchmarks/swin-base-w6_ehm-pre_8xb256-coslr-'
    '100e_in1k-192px.py',
}


@pytest.fixture(scope='module', params=list(MODELS_UNDER_TEST))
def runs(request, tmp_path_factory):
    """DDP, FSDP2 and resumed-FSDP2 records per rank, the root, the model."""
    name = request.param
    root = str(tmp_path_factory.mktemp(f'fsdp2_{name}'))
    init = osp.join(root, 'init.pth')
    save_init(MODELS_UNDER_TEST[name], init)
    model = ('--model', name)
    torchrun('ddp', root, osp.join(root, 'ddp'), str(ITERS), *model,
             '--load-from', init)
    torchrun('fsdp2', root, osp.join(root, 'fsdp2'), str(ITERS), *model,
             '--load-from', init)
    torchrun('fsdp2', root, osp.join(root, 'resumed'), str(ITERS), *model,
             '--resume', osp.join(root, 'work_fsdp2', 'iter_2.pth'),
             '--checkpointing')
    records = {
        run: load_records(root, run)
        for run in ('ddp', 'fsdp2', 'resumed')
    }
    return records, root, name


def test_fsdp2_equals_ddp(runs):
    records, _, _ = runs
    for ddp, fsdp2 in zip(records['ddp'], records['fsdp2']):
        assert len(fsdp2['loss']) == len(ddp['loss']) == ITERS
        torch.testing.assert_close(torch.stack(fsdp2['loss']),
                                   torch.stack(ddp['loss']), **TOL)
        for key in ('mask', 'ids_restore'):
            assert len(fsdp2[key]) == ITERS
            for a, b in zip(fsdp2[key], ddp[key]):
                assert torch.equal(a, b)
        # the masks change from iteration to iteration
        assert any(not torch.equal(m, ddp['mask'][0]) for m in ddp['mask'])
        torch.testing.assert_close(torch.stack(fsdp2['teacher_distance']),
                                   torch.stack(ddp['teacher_distance']),
                                   **TOL)
        assert len(fsdp2['feature']) == len(ddp['feature']) > 0
        for a, b in zip(fsdp2['feature'], ddp['feature']):
            torch.testing.assert_close(a, b, **CLIPPED_TOL)
        state, ref = fsdp2['state_dict'], ddp['state_dict']
        assert list(state) == list(ref)  # the unsharded model's keys
        assert int(state['teacher.steps']) == ITERS
        for key in ref:
            torch.testing.assert_close(state[key], ref[key], **CLIPPED_TOL)
        teacher = [k for k in ref if k.startswith('teacher.module.')]
        assert max_diff({k: state[k] for k in teacher}, {
            k: state[k.replace('teacher.module.', 'backbone.')]
            for k in teacher
        }) > 1e-4  # the teacher moved, not a copy of the student
    assert max_diff(records['fsdp2'][0]['state_dict'],
                    records['fsdp2'][1]['state_dict']) == 0


def test_resume_with_checkpointing_equals_straight_run(runs):
    records, root, _ = runs
    assert_resumed_equals_straight(records['fsdp2'], records['resumed'], 2,
                                   TOL)
    # the checkpoint is the DDP run's: same keys, AdamW state at full shape
    assert_same_checkpoint(osp.join(root, 'work_fsdp2', 'iter_4.pth'),
                           osp.join(root, 'work_ddp', 'iter_4.pth'),
                           CLIPPED_TOL)


def _finetune_backbone(name: str, path: str) -> torch.nn.Module:
    """The fine-tuning config's backbone, shrunk to the tiny encoder, with
    ``path``'s student encoder loaded through its ``init_cfg``."""
    cfg = Config.fromfile(osp.join(REPO, 'configs', FINETUNE[name]))
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    tiny = Config.fromfile(MODELS_UNDER_TEST[name]).model.backbone
    backbone = {k: copy.deepcopy(v) for k, v in tiny.items() if k != 'type'}
    if name == 'simmim-swin':
        in_channels = tiny.arch.embed_dims * 8
        backbone.pop('drop_path_rate')
    else:
        in_channels = tiny.arch.embed_dims
    backbone['arch'] = dict(_delete_=True, **backbone['arch'])
    cfg.merge_from_dict(dict(model=dict(
        backbone=dict(**backbone, init_cfg=dict(checkpoint=path)),
        head=dict(num_classes=2, in_channels=in_channels))))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model.backbone


@pytest.mark.parametrize('source', ['student', 'teacher'])
def test_checkpoint_loads_with_key_accounting(runs, source):
    """The consolidated checkpoint through SimMIM's fine-tuning path.

    The fine-tuning config (mmpretrain's benchmark with the EHM checkpoint,
    ``configs/simmim/benchmarks`` for Swin, ``configs/maskfeat/benchmarks``
    for a ViT) loads the student through its ``init_cfg``; the teacher
    encoder has the same keys and shapes.
    """
    _, root, name = runs
    path = osp.join(root, 'work_fsdp2', 'iter_4.pth')
    backbone = _finetune_backbone(name, path)
    encoder = load_encoder(path, source).state_dict
    report = account_keys(backbone.state_dict(), encoder)
    assert report.mismatched == []
    if name == 'simmim-swin':
        assert report.missing == [] and report.unexpected == ['mask_token']
    else:  # fine-tuning pools the tokens: new ln2, unused final ln1
        assert report.missing == ['ln2.weight', 'ln2.bias']
        assert report.unexpected == ['mask_token', 'ln1.weight', 'ln1.bias']
    state = torch.load(path)['state_dict']
    prefix = dict(student='backbone.', teacher='teacher.module.')[source]
    assert set(encoder) == {k[len(prefix):] for k in state
                            if k.startswith(prefix)}
    if source == 'student':  # loaded by the config's init_cfg
        loaded = backbone.state_dict()
        for key in report.loaded:
            assert torch.equal(loaded[key], encoder[key]), key
