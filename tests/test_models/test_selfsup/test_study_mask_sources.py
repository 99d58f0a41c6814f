# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The study v2 mask sources train in EHMMAE, without host reads."""
from unittest import mock

import pytest
import torch
from mmengine.logging import MessageHub
from test_no_host_sync import _cuda_steps_without_sync, host_reads
from tiny_models import TINY_EHM_MAE, build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import (
    BlockwiseMasking,
    ColorNoiseMasking,
    ShuffledAffinityMasking,
)

SHUFFLED = dict(type='ShuffledAffinityMasking', d_max=3.,
                depth_unit='node_size', hierarchy_cfg=dict(compact=False))
SOURCES = [
    (SHUFFLED, ShuffledAffinityMasking),
    (dict(type='ColorNoiseMasking'), ColorNoiseMasking),
    (dict(type='ColorNoiseMasking', color='red', sigma=1.0),
     ColorNoiseMasking),
    (dict(type='BlockwiseMasking', size_range='beit'), BlockwiseMasking),
]


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_study_mask_sources')
    hub.update_info('max_iters', 10)
    yield hub
    MessageHub._instance_dict.pop('test_study_mask_sources')


@pytest.mark.parametrize('masking,kind', SOURCES,
                         ids=['shuffled', 'green', 'red', 'beit-blocks'])
def test_source_trains_in_ehmmae_without_host_reads(masking, kind, hub):
    model = build_tiny(TINY_EHM_MAE, masking=masking).train()
    assert isinstance(model.masking, kind)
    images = torch.randn(4, 3, 32, 32)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    for it in (0, 5, 10):
        hub.update_info('iter', it)
        with host_reads() as found:
            losses = model.loss(images, [])
        assert found == [], (it, found)
        assert torch.isfinite(losses['loss'])
        optim.zero_grad()
        losses['loss'].backward()
        optim.step()
    masks = model.generate_masks(images, 1.0)
    assert bool((masks.mask.sum(1) == 12).all())
    model.eval()
    samples = model.predict(images)
    assert samples[0].hierarchy_ancestors.shape[1:] == (4, 4)


def test_noise_masks_skip_the_teacher(hub):
    model = build_tiny(TINY_EHM_MAE, masking=dict(type='ColorNoiseMasking'))
    hub.update_info('iter', 5)
    with mock.patch.object(
            model, 'teacher_affinity',
            side_effect=AssertionError('affinity not needed')):
        losses = model.loss(torch.randn(4, 3, 32, 32), [])
    assert 'mask_node_size' not in losses  # no nodes: not logged
    assert float(losses['mask_depth']) == 0


def test_shuffled_masks_and_tree_are_the_next_images(hub):
    model = build_tiny(TINY_EHM_MAE, masking=dict(
        type='ShuffledAffinityMasking', d_max=3., depth_unit='node_size'))
    hub.update_info('iter', 10)
    images = torch.randn(4, 3, 32, 32)
    losses = model.loss(images, [])
    assert float(losses['mask_node_size']) > 1  # logged like EHM's
    model.eval()
    samples = model.predict(images)
    made = torch.stack([s.hierarchy_ancestors for s in samples])
    # predict scores the tree that made the masks: image i + 1's teacher
    # tree (the model's own affinity, the tree builder's options)
    own = model.predict_teacher_hierarchy(images)
    assert torch.equal(made, own.roll(-1, 0))
    assert not torch.equal(made, own)
    # and the image's own tree is there too, labelled as the teacher's
    teacher = torch.stack([s.teacher_hierarchy_ancestors for s in samples])
    assert torch.equal(teacher, own)
    with pytest.raises(ValueError, match='at least 2 images'):
        model.predict(images[:1])


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('masking,kind', SOURCES,
                         ids=['shuffled', 'green', 'red', 'beit-blocks'])
def test_cuda_step_does_not_synchronize(masking, kind, hub):
    model = build_tiny(TINY_EHM_MAE, masking=masking).to('cuda').train()
    assert isinstance(model.masking, kind)
    _cuda_steps_without_sync(model, hub, 32)
