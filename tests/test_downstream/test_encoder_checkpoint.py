# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Encoder extraction and the mmpretrain <-> official-MAE/timm key maps."""
from collections import OrderedDict

import pytest
import torch
from mmpretrain.models import MAEViT

from ehm_mm.downstream import (
    extract_encoder,
    infer_vit_arch,
    mmpretrain_to_timm,
    timm_to_mmpretrain,
)

# The complete key set of the official MAE ``mae_pretrain_vit_base.pth``
# for a 2-block encoder (what timm / detectron2 / mmdet's ViTDet read).
OFFICIAL_MAE_KEYS = {
    'cls_token', 'pos_embed', 'patch_embed.proj.weight',
    'patch_embed.proj.bias', 'norm.weight', 'norm.bias'
} | {
    f'blocks.{i}.{name}.{kind}'
    for i in range(2) for name in ('norm1', 'attn.qkv', 'attn.proj',
                                   'norm2', 'mlp.fc1', 'mlp.fc2')
    for kind in ('weight', 'bias')
}


@pytest.fixture(scope='module')
def encoder_state() -> 'OrderedDict[str, torch.Tensor]':
    vit = MAEViT(
        arch=dict(
            embed_dims=16, num_layers=2, num_heads=2,
            feedforward_channels=32),
        img_size=32,
        patch_size=8)
    vit.init_weights()
    return vit.state_dict()


def ehm_checkpoint(encoder_state) -> dict:
    """An mmengine checkpoint laid out as the EHM-MAE contract says."""
    state_dict = OrderedDict()
    for key, value in encoder_state.items():
        state_dict[f'backbone.{key}'] = value
    state_dict['neck.mask_token'] = torch.zeros(1, 1, 8)
    state_dict['neck.decoder_embed.weight'] = torch.zeros(8, 16)
    for key, value in encoder_state.items():
        # the EMA teacher: a different copy of the encoder
        state_dict[f'teacher.module.{key}'] = value + 1
    state_dict['teacher.steps'] = torch.tensor(2)
    return dict(meta=dict(iter=2), state_dict=state_dict, optimizer={})


def test_official_mae_layout(encoder_state):
    timm = mmpretrain_to_timm(encoder_state)
    assert set(timm) == OFFICIAL_MAE_KEYS
    assert timm['blocks.1.mlp.fc1.weight'] is encoder_state[
        'layers.1.ffn.layers.0.0.weight']
    assert timm['norm.weight'] is encoder_state['ln1.weight']
    back = timm_to_mmpretrain(timm)
    assert list(back) == list(encoder_state)
    for key in back:
        assert back[key] is encoder_state[key]


def test_unknown_keys_are_refused(encoder_state):
    timm = dict(mmpretrain_to_timm(encoder_state))
    timm['head.weight'] = torch.zeros(10, 16)
    timm['fc_norm.weight'] = torch.zeros(16)
    with pytest.raises(ValueError, match='head.weight'):
        timm_to_mmpretrain(timm)
    bad = dict(encoder_state, **{'layers.0.gamma_1': torch.zeros(16)})
    with pytest.raises(ValueError, match='gamma_1'):
        mmpretrain_to_timm(bad)


def test_extract_student_and_teacher(encoder_state):
    checkpoint = ehm_checkpoint(encoder_state)
    student = extract_encoder(checkpoint)
    assert student.source_format == 'ehm'
    assert list(student.state_dict) == list(encoder_state)
    assert torch.equal(student.state_dict['pos_embed'],
                       encoder_state['pos_embed'])
    assert set(student.dropped) == {'neck', 'teacher'}
    assert 'neck.mask_token' in student.dropped['neck']
    assert len(student.dropped['teacher']) == len(encoder_state) + 1
    assert student.summary() == (
        'kept 30 encoder keys (ehm checkpoint); dropped neck: 2, teacher: 31')

    teacher = extract_encoder(checkpoint, source='teacher')
    assert list(teacher.state_dict) == list(encoder_state)
    assert torch.equal(teacher.state_dict['ln1.weight'],
                       encoder_state['ln1.weight'] + 1)
    assert len(teacher.dropped['backbone']) == len(encoder_state)
    assert 'teacher.steps' in teacher.dropped['teacher']


def test_extract_other_layouts(encoder_state):
    timm = extract_encoder({'model': mmpretrain_to_timm(encoder_state)})
    assert timm.source_format == 'timm'
    assert list(timm.state_dict) == list(encoder_state)
    plain = extract_encoder({'state_dict': dict(encoder_state)})
    assert plain.source_format == 'encoder'
    assert plain.dropped == {}
    assert extract_encoder(dict(encoder_state)).source_format == 'encoder'


def test_extract_errors(encoder_state):
    with pytest.raises(ValueError, match='source must be'):
        extract_encoder(ehm_checkpoint(encoder_state), source='ema')
    no_teacher = {
        'state_dict': {f'backbone.{k}': v
                       for k, v in encoder_state.items()}
    }
    with pytest.raises(ValueError, match='no teacher encoder'):
        extract_encoder(no_teacher, source='teacher')
    with pytest.raises(ValueError, match='EMA teacher'):
        extract_encoder({'state_dict': dict(encoder_state)}, 'teacher')
    with pytest.raises(ValueError, match='Unrecognised checkpoint layout'):
        extract_encoder({'state_dict': {'conv1.weight': torch.zeros(1)}})
    with pytest.raises(ValueError, match='neither'):
        extract_encoder({'epoch': 3, 'meta': {}})
    with pytest.raises(TypeError, match='must be a dict'):
        extract_encoder([1, 2])


def test_infer_vit_arch(encoder_state):
    assert infer_vit_arch(encoder_state) == dict(
        embed_dims=16,
        num_layers=2,
        feedforward_channels=32,
        patch_size=8,
        in_channels=3,
        img_size=32)
    with pytest.raises(ValueError, match='pos_embed'):
        infer_vit_arch({'layers.0.ffn.layers.0.0.weight': torch.zeros(1)})


def test_declared_arch_from_metadata():
    from mmengine.config import Config

    from ehm_mm.downstream import check_vit_arch, declared_vit_arch
    arch = dict(embed_dims=96, num_layers=4, feedforward_channels=384)
    text = Config(
        dict(model=dict(backbone=dict(arch=dict(num_heads=3, **arch)),
                        neck=dict(embed_dim=96)))).pretty_text
    assert declared_vit_arch(dict(meta=dict(cfg=text))) == arch
    # Only the top-level model counts (configs/_base_/ehm_mae.py has an
    # ehm_mae_model variable whose backbone names no arch).
    other = "ehm_mae_model = dict(backbone=dict(type='EHMMAEViT'))\n"
    assert declared_vit_arch(dict(meta=dict(cfg=other + text))) == arch
    named = "model = dict(backbone=dict(type='MAEViT', arch='b'))"
    assert declared_vit_arch(dict(meta=dict(cfg=named))) == dict(
        embed_dims=768, num_layers=12, feedforward_channels=3072)
    assert declared_vit_arch(dict(meta=dict(encoder_arch=arch))) == arch
    assert declared_vit_arch(dict(meta=dict(iter=3))) is None
    assert declared_vit_arch(dict(state_dict={})) is None
    assert check_vit_arch(arch, arch) == 'the checkpoint metadata'
    assert check_vit_arch(
        dict(embed_dims=768, num_layers=12,
             feedforward_channels=3072)).startswith('mmpretrain arch')
    with pytest.raises(ValueError, match='metadata declares'):
        check_vit_arch(dict(arch, num_layers=3), arch)
    with pytest.raises(ValueError, match='no named mmpretrain ViT'):
        check_vit_arch(dict(embed_dims=768, num_layers=10,
                            feedforward_channels=3072))


def test_blocks_must_be_complete(encoder_state):
    from ehm_mm.downstream import count_vit_blocks
    assert count_vit_blocks(encoder_state) == 2
    lacking = {
        k: v
        for k, v in encoder_state.items() if k != 'layers.1.ln2.weight'
    }
    with pytest.raises(ValueError, match=r'lacks \['):
        count_vit_blocks(lacking)
    with pytest.raises(ValueError, match='no transformer block'):
        count_vit_blocks({'pos_embed': torch.zeros(1)})


def test_simmim_vit_mask_token_dropped_and_counted():
    """EHM-SimMIM's ViT (MaskFeatViT) keeps its mask token in the encoder:
    with ``drop_mask_token`` (the converters) it is dropped (counted) for
    either copy, and what is kept loads into a plain mmpretrain ViT with no
    key missing or unexpected."""
    from mmpretrain.models import MaskFeatViT, VisionTransformer
    arch = dict(embed_dims=16, num_layers=2, num_heads=2,
                feedforward_channels=32)
    simmim_vit = MaskFeatViT(arch=arch, img_size=32, patch_size=8)
    encoder = simmim_vit.state_dict()
    assert 'mask_token' in encoder
    state_dict = OrderedDict()
    for prefix in ('backbone.', 'teacher.module.'):
        state_dict.update((prefix + key, value) for key, value in
                          encoder.items())
    state_dict['neck.decoder.0.weight'] = torch.zeros(4, 16, 1, 1)
    for source, prefix in (('student', 'backbone.'),
                           ('teacher', 'teacher.module.')):
        kept = extract_encoder(dict(state_dict=state_dict), source=source)
        assert 'mask_token' in kept.state_dict  # what a fine-tune load sees
        extracted = extract_encoder(dict(state_dict=state_dict),
                                    source=source, drop_mask_token=True)
        assert 'mask_token' not in extracted.state_dict
        assert extracted.dropped['mask_token'] == [prefix + 'mask_token']
        assert len(extracted.state_dict) == len(encoder) - 1
        plain = VisionTransformer(arch=arch, img_size=32, patch_size=8)
        report = plain.load_state_dict(extracted.state_dict, strict=False)
        assert report.missing_keys == [] and report.unexpected_keys == []
