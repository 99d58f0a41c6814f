# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""RetrievalFeatureExtractor and strict encoder loading."""
import pytest
import torch
from mmpretrain.models.selfsup import MAEViT
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import ehm_mm.retrieval  # noqa: F401  (registers the benchmarks)
from ehm_mm.downstream import extract_encoder, load_encoder_weights

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def _extractor(**kwargs):
    cfg = dict(
        type='RetrievalFeatureExtractor',
        backbone=dict(type='VisionTransformer', arch=TINY, img_size=32,
                      patch_size=8))
    cfg.update(kwargs)
    return MODELS.build(cfg).eval()


def _ehm_checkpoint():
    """An EHM-style state dict: student, decoder, EMA teacher."""
    torch.manual_seed(0)
    student = MAEViT(arch=TINY, img_size=32, patch_size=8)
    teacher = MAEViT(arch=TINY, img_size=32, patch_size=8)
    for p in teacher.parameters():
        torch.nn.init.normal_(p)
    state = {f'backbone.{k}': v for k, v in student.state_dict().items()}
    state.update(
        {f'teacher.module.{k}': v
         for k, v in teacher.state_dict().items()})
    state['teacher.steps'] = torch.tensor(3)
    state['neck.decoder_embed.weight'] = torch.zeros(4, 32)
    state['head.dummy'] = torch.zeros(1)
    return dict(meta=dict(epoch=1), state_dict=state), student, teacher


def test_descriptors_are_normalised_and_pooled():
    model = _extractor(pooling='cls+gem', scales=(1.0, 0.75))
    # Any input size: pos_embed is interpolated, borders padded.
    x = torch.randn(3, 3, 40, 56)
    features = model(x)
    assert features.shape == (3, 64)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))
    # Single-scale CLS descriptor = normalised CLS token of the last layer.
    cls_model = _extractor(pooling='cls')
    cls_model.backbone.load_state_dict(model.backbone.state_dict())
    tokens = cls_model.backbone(x)[-1]
    expected = torch.nn.functional.normalize(tokens[:, 0], dim=1)
    torch.testing.assert_close(cls_model(x), expected)
    # predict mode fills the data samples.
    samples = cls_model(x, [DataSample() for _ in range(3)], mode='predict')
    torch.testing.assert_close(
        torch.stack([s.retrieval_feature for s in samples]), expected)
    with pytest.raises(ValueError, match='no loss'):
        cls_model(x, mode='loss')


def test_multiscale_averages_before_normalising():
    model = _extractor(pooling='avg', scales=(1.0, 0.5))
    x = torch.randn(2, 3, 32, 32)
    tokens_full = model.backbone(x)[-1][:, 1:].mean(1)
    half = torch.nn.functional.interpolate(
        x, scale_factor=0.5, mode='bilinear', align_corners=False)
    tokens_half = model.backbone(half)[-1][:, 1:].mean(1)
    expected = torch.nn.functional.normalize(
        (tokens_full + tokens_half) / 2, dim=1)
    torch.testing.assert_close(model(x), expected)


def test_bad_configs():
    with pytest.raises(ValueError, match="out_type must be 'raw'"):
        _extractor(backbone=dict(type='VisionTransformer', arch=TINY,
                                 img_size=32, patch_size=8,
                                 out_type='cls_token'))
    with pytest.raises(ValueError, match='scales'):
        _extractor(scales=(1.0, 0.0))
    with pytest.raises(ValueError, match='unknown pooling'):
        _extractor(pooling='max')


def test_load_student_teacher_and_plain(tmp_path):
    checkpoint, student, teacher = _ehm_checkpoint()
    path = str(tmp_path / 'ehm.pth')
    torch.save(checkpoint, path)
    model = _extractor()
    load_encoder_weights(model.backbone, path, 'student')
    for k, v in student.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    load_encoder_weights(model.backbone, path, 'teacher')
    for k, v in teacher.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    # A plain encoder state dict, and a DDP-prefixed one.
    plain = student.state_dict()
    assert extract_encoder(plain).state_dict.keys() == plain.keys()
    ddp = {f'module.backbone.{k}': v for k, v in plain.items()}
    assert extract_encoder(ddp).state_dict.keys() == plain.keys()
    # A larger input grid: pos_embed is resized on load.
    big = _extractor(backbone=dict(type='VisionTransformer', arch=TINY,
                                   img_size=64, patch_size=8))
    load_encoder_weights(big.backbone, checkpoint)
    assert big.backbone.pos_embed.shape == (1, 65, 32)


def test_load_errors_account_for_every_key():
    checkpoint, _, _ = _ehm_checkpoint()
    model = _extractor()
    state = dict(checkpoint['state_dict'])
    state.pop('backbone.layers.1.ffn.layers.1.weight')
    with pytest.raises(ValueError,
                       match=r'missing from the checkpoint: \[.layers\.1'):
        load_encoder_weights(model.backbone, dict(state_dict=state))
    state = dict(checkpoint['state_dict'])
    state['backbone.extra.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"does not have: \['extra"):
        load_encoder_weights(model.backbone, dict(state_dict=state))
    no_teacher = {
        k: v
        for k, v in checkpoint['state_dict'].items()
        if not k.startswith('teacher.')
    }
    with pytest.raises(ValueError, match='has no teacher encoder'):
        load_encoder_weights(model.backbone, no_teacher, 'teacher')
    wider = _extractor(backbone=dict(
        type='VisionTransformer',
        arch=dict(TINY, embed_dims=48, feedforward_channels=96),
        img_size=32, patch_size=8))
    with pytest.raises(ValueError, match='shape mismatch'):
        load_encoder_weights(wider.backbone, checkpoint)
    with pytest.raises(ValueError, match='must be one of'):
        load_encoder_weights(model.backbone, checkpoint, 'ema')
