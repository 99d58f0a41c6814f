# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Every shipped downstream config, at full size, with an EHM checkpoint.

The ViT-B configs build their whole model and load a random full-size
EHM-layout checkpoint (``backbone.*`` plus decoder keys) through the
config's own ``init_cfg``; the load must take every encoder weight but the
documented ones. The ViT-L configs are checked on PyTorch's ``meta`` device
(shapes only, no memory): their backbone's keys and shapes against an
``MAEViT-L``.
"""
import glob
import os.path as osp
from collections import OrderedDict

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmpretrain.models import MAEViT

from ehm_mm.downstream import account_keys, check_key_report
from ehm_mm.downstream.converters import mmpretrain_vit_allowed_keys

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
CONFIG_ROOT = osp.join(REPO_ROOT, 'configs', 'benchmarks')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_ROOT, 'mm*', '*.py')))
SCOPES = {'mmpretrain': 'mmpretrain', 'mmseg': 'mmseg', 'mmdet': 'mmdet'}
PRETRAIN_KEY = 'model.backbone.init_cfg.checkpoint'


def library(config: str) -> str:
    return osp.basename(osp.dirname(config))


def test_every_library_has_configs():
    assert {library(c) for c in CONFIGS} == set(SCOPES)
    names = [osp.basename(c) for c in CONFIGS]
    assert 'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py' in names
    assert 'vit-large-p16_ehm-pre_8xb128-coslr-50e_in1k.py' in names
    assert 'vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py' in names


@pytest.mark.parametrize('config', CONFIGS, ids=osp.basename)
def test_config_contract(config):
    """Scope, imports and the one key the launchers set."""
    cfg = Config.fromfile(config)
    assert cfg.default_scope == SCOPES[library(config)]
    init_cfg = cfg.model.backbone.init_cfg
    assert init_cfg.type == 'Pretrained'
    assert init_cfg.checkpoint.startswith('pretrain/ehm_vit-')
    # the key tools/benchmarks/*/dist_train.sh writes PRETRAIN to
    cfg.merge_from_dict({PRETRAIN_KEY: '/x/ehm.pth'})
    assert cfg.model.backbone.init_cfg.checkpoint == '/x/ehm.pth'
    if library(config) == 'mmpretrain':
        assert init_cfg.prefix == 'backbone.'
    else:
        assert cfg.custom_imports.imports == [
            f'ehm_mm.downstream.{library(config)}'
        ]
        assert cfg.model.get('pretrained') is None


@pytest.fixture(scope='module')
def vit_b_checkpoint(tmp_path_factory):
    """A random ViT-B/16 checkpoint in the EHM layout (344 MB)."""
    torch.manual_seed(0)
    with torch.device('meta'):
        shapes = MAEViT(arch='b').state_dict()
    encoder = OrderedDict(
        (key, torch.randn(value.shape)) for key, value in shapes.items())
    state_dict = OrderedDict(
        (f'backbone.{key}', value) for key, value in encoder.items())
    state_dict['neck.mask_token'] = torch.zeros(1, 1, 512)
    state_dict['neck.decoder_embed.weight'] = torch.zeros(512, 768)
    path = str(tmp_path_factory.mktemp('vit_b') / 'ehm_vit-b.pth')
    torch.save(dict(meta=dict(iter=1), state_dict=state_dict), path)
    return path, encoder


def build_model(cfg: Config, scope: str):
    if scope != 'mmpretrain':
        __import__(cfg.custom_imports.imports[0])
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg.model)


VIT_B = [c for c in CONFIGS if 'vit-large' not in c]


@pytest.mark.parametrize('config', VIT_B, ids=osp.basename)
def test_vit_b_config_loads_ehm_checkpoint(config, vit_b_checkpoint):
    path, encoder = vit_b_checkpoint
    cfg = Config.fromfile(config)
    cfg.merge_from_dict({PRETRAIN_KEY: path})
    scope = SCOPES[library(config)]
    model = build_model(cfg, scope)
    model.init_weights()
    backbone = model.backbone
    state = backbone.state_dict()

    if scope == 'mmpretrain':
        # mmengine's Pretrained init: account for what it took ourselves
        report = account_keys(state, encoder)
        check_key_report(report, *mmpretrain_vit_allowed_keys(backbone))
        expected_unused = (['ln1.weight', 'ln1.bias']
                           if 'linear' not in config else [])
    else:
        report = backbone.pretrained_report
        expected_unused = (['ln1.weight', 'ln1.bias'] if scope == 'mmseg'
                           else ['cls_token', 'ln1.weight', 'ln1.bias'])
    assert report.unexpected == expected_unused
    assert report.mismatched == []
    assert len(report.loaded) == len(encoder) - len(expected_unused)
    for key in report.loaded:
        if key == 'pos_embed':
            continue  # resized to the downstream grid
        assert torch.equal(state[key], encoder[key]), key
    if scope == 'mmseg':
        assert state['pos_embed'].shape == (1, 1 + 32 * 32, 768)
        assert len(report.missing) == 4 * 12
    if scope == 'mmdet':
        assert state['pos_embed'].shape == (1, 64, 64, 768)
        assert len(report.missing) == 2 * 12
    model.eval()
    if scope == 'mmseg':
        # the four ViT levels Feature2Pyramid rescales (512 px crop)
        with torch.no_grad():
            features = backbone(torch.randn(1, 3, 512, 512))
        assert [tuple(f.shape) for f in features] == [(1, 768, 32, 32)] * 4
    if scope == 'mmdet':
        # backbone + SimpleFPN at full width (256 px input for speed)
        with torch.no_grad():
            features = model.extract_feat(torch.randn(1, 3, 256, 256))
        assert [tuple(f.shape) for f in features] == [
            (1, 256, 256 // s, 256 // s) for s in (4, 8, 16, 32, 64)
        ]


@pytest.mark.parametrize(
    'config', [c for c in CONFIGS if 'vit-large' in c], ids=osp.basename)
def test_vit_l_config_matches_mae_vit_l(config):
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    with torch.device('meta'):
        backbone = build_model(cfg, 'mmpretrain').backbone
        encoder = MAEViT(arch='l').state_dict()
    report = account_keys(backbone.state_dict(), encoder)
    check_key_report(report, *mmpretrain_vit_allowed_keys(backbone))
    unused = [] if 'linear' in config else ['ln1.weight', 'ln1.bias']
    assert report.unexpected == unused
    assert len(report.loaded) == len(encoder) - len(unused)
    assert len(encoder) == 4 + 24 * 12 + 2
