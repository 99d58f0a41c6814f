# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMSimMIM(affinity_source='pixels'): trees from the pixel cues per mask
patch, no teacher (Swin and ViT)."""
import glob
import os.path as osp
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from PIL import Image
from runner_utils import runner_config, train_in_process
from tiny_models import TINY_EHM_SIMMIM_SWIN as SWIN
from tiny_models import TINY_EHM_SIMMIM_VIT as VIT
from tiny_models import build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.engine.hooks import HierarchyVisualizationHook
from ehm_mm.evaluation.metrics.hierarchy_iou import best_node_iou
from ehm_mm.models.masking import cue_affinity, patch_cues

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
PRE = dict(type='SelfSupDataPreprocessor', mean=MEAN, std=STD, to_rgb=True)
TINY = osp.join(
    osp.dirname(__file__), '..', '..', 'data', 'configs',
    'ehm_mae_tiny_cpu.py')
# name: (model config, image size, mask grid side, mask patch side)
MODELS = {
    'swin': (SWIN, 128, 4, 32),  # 32 px mask patches of 8 x 8 tokens
    'vit': (VIT, 64, 8, 8),
    'vit-scale2': (dict(VIT, mask_patch_size=16), 64, 4, 16),
}


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_ehm_simmim_pixel_affinity')
    hub.update_info('iter', 10)
    hub.update_info('max_iters', 20)
    yield hub
    MessageHub._instance_dict.pop('test_ehm_simmim_pixel_affinity')


def _model(name: str, **changes) -> torch.nn.Module:
    changes = dict(dict(affinity_source='pixels', data_preprocessor=PRE),
                   **changes)
    return build_tiny(MODELS[name][0], **changes).train()


def planted_images(size: int, grid: int) -> np.ndarray:
    """Two colour halves on a mask-patch boundary (left/right, then
    top/bottom), mild noise: uint8 ``[2, size, size, 3]``."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 12, (2, size, size, 3)).astype(np.uint8)
    cut = (grid // 2 - 1) * size // grid  # the boundary, one patch off centre
    imgs[0, :, :cut] += np.uint8([200, 40, 40])
    imgs[0, :, cut:] += np.uint8([30, 60, 190])
    imgs[1, :cut] += np.uint8([40, 180, 40])
    imgs[1, cut:] += np.uint8([180, 160, 30])
    return imgs


def normalise(imgs: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(
        STD)[:, None, None]


@pytest.mark.parametrize('name', list(MODELS))
def test_the_affinity_is_the_cue_affinity_per_mask_patch(name):
    _, size, grid, mask_patch = MODELS[name]
    model = _model(name)
    assert model.mask_grid == (grid, grid)
    imgs = planted_images(size, grid)
    affinity = model.teacher_affinity(normalise(imgs))
    expected = cue_affinity(patch_cues(imgs, mask_patch))  # [2, N, N]
    assert affinity.shape == (2, grid * grid, grid * grid)
    torch.testing.assert_close(affinity, expected, rtol=1e-4, atol=1e-5)
    # a preprocessor that does not normalise: the inputs are the pixels
    raw = _model(name, data_preprocessor=dict(type='SelfSupDataPreprocessor'))
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2)
    torch.testing.assert_close(raw.teacher_affinity(x), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', list(MODELS))
def test_planted_halves_give_level_one_nodes_on_one_side(name, hub):
    _, size, grid, _ = MODELS[name]
    model = _model(name).eval()
    inputs = normalise(planted_images(size, grid))
    cut = grid // 2 - 1
    side = torch.zeros(2, grid, grid, dtype=torch.long)
    side[0, :, cut:] = 1
    side[1, cut:] = 1
    samples = model.predict(inputs)
    ancestors = torch.stack([s.hierarchy_ancestors for s in samples])
    assert torch.equal(ancestors, model.predict_hierarchy(inputs))
    assert ancestors.shape[:2] == (2, model.masking.hierarchy(
        model.teacher_affinity(inputs)).ancestors.shape[1])
    assert ancestors.shape[2:] == (grid, grid)
    for b in range(2):
        level1 = ancestors[b, 1]  # [grid, grid]
        for node in level1.unique():
            assert side[b][level1 == node].unique().numel() == 1, (b, node)
        assert level1.unique().numel() < grid * grid  # merges happened
        # HierarchyIoU reads these ancestors; level 0 alone fits a patch
        obj = side[b].repeat_interleave(size // grid, 0).repeat_interleave(
            size // grid, 1)
        assert 0 < float(best_node_iou(ancestors[b], obj)) <= 1
    assert samples[0].feature.dim() == 1
    # depth-1 training masks are unions of those nodes, on the token grid
    result = model.generate_masks(inputs, 0.5, depth=[1, 1])
    mask = model.token_mask(result)
    assert bool((result.depth == 1).all())
    assert bool((result.mask.sum(1) == round(0.6 * grid * grid)).all())
    assert mask.shape == (2, *model.token_grid)


@pytest.mark.parametrize('name', ['swin', 'vit'])
def test_a_few_training_iterations_build_and_run_no_teacher(name, hub):
    _, size, _, _ = MODELS[name]
    model = _model(name)
    assert model.teacher is None and model.teacher_type is None
    assert not any(k.startswith('teacher') for k in model.state_dict())
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    inputs = normalise(planted_images(size, MODELS[name][2]))
    no_teacher = mock.patch.object(
        model, 'encoder_affinity',
        side_effect=AssertionError('the teacher encoder ran'))
    with no_teacher:
        for it in range(4):
            hub.update_info('iter', it * 5)  # progress 0, .25, .5, .75
            losses = model.loss(inputs, [])
            assert torch.isfinite(losses['loss'])
            assert 'teacher_distance' not in losses
            optim.zero_grad()
            losses['loss'].backward()
            optim.step()
        model.predict(inputs)
    assert float(losses['mask_depth']) > 0  # the pixel trees were cut
    assert float(losses['mask_node_size']) > 1
    # the teacher path is unchanged: it runs the teacher encoder
    teacher = _model(name, affinity_source='teacher')
    assert teacher.teacher is not None
    with mock.patch.object(teacher, 'encoder_affinity',
                           wraps=teacher.encoder_affinity) as encoder:
        teacher.loss(inputs, [])
    assert encoder.call_count == 1


@pytest.mark.parametrize('source', ['pixel', 'attention', None, 1])
@pytest.mark.parametrize('name', ['swin', 'vit'])
def test_bad_affinity_source_raises(name, source):
    with pytest.raises(ValueError, match='model.affinity_source must be one'):
        _model(name, affinity_source=source)


def test_the_visualization_hook_draws_the_pixel_tree(tmp_path, hub):
    """As for EHMMAE: the hook draws what ``teacher_affinity`` gives."""
    _, size, grid, _ = MODELS['swin']
    model = _model('swin')
    paths = []
    for i, img in enumerate(planted_images(size, grid)):
        paths.append(str(tmp_path / f'{i}.png'))
        Image.fromarray(img).save(paths[-1])
    dataset = type('Images', (), dict(
        __len__=lambda self: len(paths),
        get_data_info=lambda self, i: dict(img_path=paths[i])))()
    images = {}
    runner = SimpleNamespace(
        model=model, train_dataloader=SimpleNamespace(dataset=dataset),
        visualizer=SimpleNamespace(
            add_image=lambda name, image, step: images.update({step: image})))
    hook = HierarchyVisualizationHook(num_images=2, levels=(1, 2),
                                      min_panel_size=size)
    with mock.patch.object(
            model, 'encoder_affinity',
            side_effect=AssertionError('the teacher encoder ran')), \
            mock.patch.object(model, 'pixel_affinity',
                              wraps=model.pixel_affinity) as pixels:
        figure = hook.draw(runner, step=3)
    assert pixels.call_count == 1
    assert images[3] is figure
    # two rows of 4 panels: image, levels 1 and 2, mask
    assert figure.shape[1:] == (4 * size + 3 * 4, 3)


def test_a_few_cpu_training_iterations_with_the_runner(tmp_path):
    """The tiny CPU run with an EHM-SimMIM ViT on pixel trees: train,
    validate (HierarchyIoU on the mask grid), draw, checkpoint."""
    cfg = runner_config(TINY, str(tmp_path), 'ehm_simmim_pixels', iters=4)
    model = dict(VIT, affinity_source='pixels', data_preprocessor=PRE)
    model['backbone'] = dict(VIT['backbone'], img_size=32)
    cfg.model = model
    cfg.custom_hooks[1].interval = 4
    hub = train_in_process(cfg).message_hub
    losses = hub.get_scalar('train/loss').data[0]
    depth = hub.get_scalar('train/mask_depth').data[0]
    best_iou = hub.log_scalars['val/hierarchy/best_iou'].current()
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert depth[0] == 0.0 and depth[-1] > 0  # the pixel trees were cut
    assert 0 < best_iou <= 100
    # the hook drew before training and at iteration 4
    drawn = glob.glob(osp.join(cfg.work_dir, '*', 'vis_data', 'vis_image',
                               'ehm_hierarchy_*.png'))
    assert sorted(osp.basename(p) for p in drawn) == [
        'ehm_hierarchy_0.png', 'ehm_hierarchy_4.png']
    state = torch.load(
        osp.join(cfg.work_dir, 'iter_4.pth'), map_location='cpu',
        weights_only=False)['state_dict']
    assert not any(k.startswith('teacher') for k in state)
    assert any(k.startswith('backbone.') for k in state)
