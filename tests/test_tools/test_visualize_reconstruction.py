# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/visualize_reconstruction.py on tiny EHM-MAE and EHM-SimMIM models.

The grid has a row of 5 panels per image; each reconstruction is the input
where the mask is clear (de-normalised back to the input's pixels); for
EHM-MAE the per-image losses average to the head's loss on the batch
(every image masks as many patches).
"""
import importlib.util
import os.path as osp
from types import ModuleType

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from PIL import Image

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TINY_EHM_MAE = osp.join(REPO, 'tests', 'data', 'configs',
                        'ehm_mae_tiny_cpu.py')
TINY_MAE = osp.join(REPO, 'tests', 'data', 'configs', 'tiny_mae_cpu.py')
SIMMIM_VIT = osp.join(
    REPO, 'configs', 'simmim',
    'ehm-simmim_vit-base-p16_8xb256-amp-coslr-100e_in1k.py')
SIMMIM_SWIN = osp.join(
    REPO, 'configs', 'simmim',
    'ehm-simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py')
#: Tiny EHM-SimMIM configs: (base, model changes); 64 px ViT, 128 px Swin.
TINY_SIMMIM = {
    'vit': (SIMMIM_VIT, """model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, num_layers=2,
                            num_heads=2, feedforward_channels=64),
                  img_size=64, patch_size=8),
    neck=dict(in_channels=32, encoder_stride=8),
    head=dict(patch_size=8), mask_patch_size=8,
    masking=dict(d_max=3.0))
"""),
    'swin': (SIMMIM_SWIN, """model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16,
                            depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
                  img_size=128,
                  stage_cfgs=dict(block_cfgs=dict(window_size=4))),
    neck=dict(in_channels=128), masking=dict(d_max=2.0))
"""),
}


@pytest.fixture(scope='module')
def tool() -> ModuleType:
    path = osp.join(REPO, 'tools', 'visualize_reconstruction.py')
    spec = importlib.util.spec_from_file_location('visualize_reconstruction',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_checkpoint(config: str, path: str) -> str:
    """A checkpoint of the config's model, randomly initialised (seed 0)."""
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(meta=dict(), state_dict=model.state_dict()), path)
    return path


def random_images(folder, count: int = 2) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        array = rng.integers(0, 255, size=(70, 90, 3), dtype=np.uint8)
        paths.append(str(folder / f'img_{i}.png'))
        Image.fromarray(array).save(paths[-1])
    return paths


def check_grid(result: dict, num_images: int, panel: int) -> np.ndarray:
    grid = np.asarray(Image.open(result['out']))
    # rows of 5 panels with 4 px white gaps
    assert grid.shape == (num_images * panel + (num_images - 1) * 4,
                          5 * panel + 4 * 4, 3)
    for key in ('ehm_losses', 'random_losses'):
        assert len(result[key]) == num_images
        assert all(np.isfinite(result[key]))
    return grid


def test_ehm_mae_dataset_images(tool, tmp_path, capsys):
    checkpoint = save_checkpoint(TINY_EHM_MAE, str(tmp_path / 'mae.pth'))
    out = str(tmp_path / 'grid.png')
    result = tool.main([
        TINY_EHM_MAE, checkpoint, '--out', out, '--num-images', '3',
        '--cfg-options', f'val_dataloader.dataset.data_root={tmp_path}',
        f'test_dataloader.dataset.data_root={tmp_path}'
    ])
    assert result['depth'] == 3  # d(1) = d_max of the tiny config
    check_grid(result, 3, 128)  # 32 px images enlarged 4x
    printed = capsys.readouterr().out
    for path, loss in zip(result['images'], result['ehm_losses']):
        assert f'{path}: loss {loss:.4f} with the EHM mask (depth 3)' in \
            printed


def test_ehm_mae_reconstruction_matches_the_model(tool, tmp_path):
    checkpoint = save_checkpoint(TINY_EHM_MAE, str(tmp_path / 'mae.pth'))
    model, cfg = tool.build_model(TINY_EHM_MAE, checkpoint, 'cpu')
    images = tool.load_images(random_images(tmp_path, 3), (32, 32))
    inputs = tool.to_inputs(model, images, 'cpu')
    for depth in (0, 2):
        mask, recon, losses = tool.mae_reconstruction(model, inputs, depth, 0)
        assert mask.shape == (3, 4, 4)
        assert (mask.flatten(1).sum(1) == 12).all()  # ratio 0.75 of 16
        # the model's own loss on the batch, with the same masks
        generator = torch.Generator().manual_seed(0)
        result = model.generate_masks(inputs, 1.0, generator=generator,
                                      depth=[depth] * 3)
        latent, _, ids_restore = model.backbone(
            inputs, mask=result.mask, ids_restore=result.ids_restore,
            ids_keep=result.ids_keep)
        batch_loss = model.head.loss(
            model.neck(latent, ids_restore), inputs, result.mask)
        torch.testing.assert_close(losses.mean(), batch_loss)
        # visible patches: the input, back in its own pixels
        pixels = tool.to_images(model, recon)
        for i in range(3):
            clear = ~np.kron(mask[i].numpy(), np.ones((8, 8))).astype(bool)
            assert np.abs(pixels[i][clear].astype(int) -
                          images[i][clear].astype(int)).max() <= 1


@pytest.mark.parametrize('kind', ['vit', 'swin'])
def test_ehm_simmim(tool, tmp_path, kind):
    base, model_changes = TINY_SIMMIM[kind]
    config = tmp_path / f'tiny_{kind}.py'
    config.write_text(f'_base_ = {base!r}\n{model_changes}')
    checkpoint = save_checkpoint(str(config), str(tmp_path / 'simmim.pth'))
    images = random_images(tmp_path)
    result = tool.main([
        str(config), checkpoint, '--images', *images, '--out',
        str(tmp_path / 'grid.png'), '--depth', '1'
    ])
    size = 64 if kind == 'vit' else 128
    check_grid(result, 2, max(size, 128))

    model, _ = tool.build_model(str(config), checkpoint, 'cpu')
    pictures = tool.load_images(images, (size, size))
    inputs = tool.to_inputs(model, pictures, 'cpu')
    mask, recon, losses = tool.simmim_reconstruction(model, inputs, 1, 0)
    assert mask.shape[1:] == model.mask_grid
    # every image masks the same number of mask patches
    assert len(set(mask.flatten(1).sum(1).tolist())) == 1
    pixels = tool.to_images(model, recon)
    scale = size // mask.shape[1]
    for i in range(2):
        clear = ~np.kron(mask[i].numpy(), np.ones((scale, scale))).astype(
            bool)
        assert np.abs(pixels[i][clear].astype(int) -
                      pictures[i][clear].astype(int)).max() <= 1
    assert torch.isfinite(losses).all()


def test_bad_input_is_named(tool, tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        tool.main([TINY_EHM_MAE, str(tmp_path / 'nope.pth')])
    checkpoint = save_checkpoint(TINY_MAE, str(tmp_path / 'plain_mae.pth'))
    with pytest.raises(ValueError, match="model type 'MAE'"):
        tool.main([TINY_MAE, checkpoint, '--images', 'x.png'])
    checkpoint = save_checkpoint(TINY_EHM_MAE, str(tmp_path / 'mae.pth'))
    with pytest.raises(FileNotFoundError, match='missing.png'):
        tool.main([TINY_EHM_MAE, checkpoint, '--images',
                   str(tmp_path / 'missing.png')])
    with pytest.raises(ValueError, match='--depth must be >= 0'):
        tool.main([TINY_EHM_MAE, checkpoint, '--depth', '-1', '--images',
                   *random_images(tmp_path, 1)])
