# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMMAE with the study's control masks and patch features for probes."""
from unittest import mock

import pytest
import torch
from mmengine.logging import MessageHub
from mmpretrain.structures import DataSample
from tiny_models import TINY_EHM_MAE, build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import BlockwiseMasking, RandomHierarchyMasking

CFG = TINY_EHM_MAE


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_ehm_mae_controls')
    hub.update_info('iter', 10)
    hub.update_info('max_iters', 20)
    yield hub
    MessageHub._instance_dict.pop('test_ehm_mae_controls')


@pytest.mark.parametrize('masking,kind', [
    (dict(type='BlockwiseMasking'), BlockwiseMasking),
    (dict(type='RandomHierarchyMasking', d_max=3.), RandomHierarchyMasking),
])
def test_control_masks_train_without_teacher_affinity(hub, masking, kind):
    model = build_tiny(CFG, masking=masking)
    assert isinstance(model.masking, kind)
    images = torch.randn(4, 3, 32, 32)
    with mock.patch.object(
            model, 'teacher_affinity',
            side_effect=AssertionError('affinity not needed')):
        losses = model.loss(images, [DataSample() for _ in range(4)])
        masks = model.generate_masks(images, 0.5)
    assert torch.isfinite(losses['loss'])
    assert float(losses['mask_node_size']) >= 1  # logged for both controls
    assert bool((masks.mask.sum(1) == 12).all())
    losses['loss'].backward()
    # predict scores the tree the masks are cut from (block pieces, random
    # tree); the teacher's is teacher_hierarchy_ancestors
    samples = model.predict(images)
    assert samples[0].hierarchy_ancestors.shape[1:] == (4, 4)


def test_predict_patch_features(hub):
    model = build_tiny(CFG)
    images = torch.randn(3, 3, 32, 32)
    assert 'patch_features' not in model.predict(images)[0]
    model.predict_patch_features = True
    samples = model.predict(images)
    feats = torch.stack([s.patch_features for s in samples])
    assert feats.shape == (3, 4, 4, 48)
    tokens = model.backbone(images, mask=None)[-1][:, 1:]
    assert torch.allclose(feats.reshape(3, 16, 48), tokens)
    # the pooled feature is their mean ('avg' pooling)
    assert torch.allclose(samples[0].feature, feats[0].mean((0, 1)),
                          atol=1e-6)
