# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Pixel-cue affinity: the tensor path equals the data pipeline's path."""
from unittest import mock

import numpy as np
import pytest
import torch

import ehm_mm
from ehm_mm.models.masking import cue_affinity, patch_cues, pixel_affinity

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def _images(batch: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def test_the_transform_module_keeps_its_names():
    from ehm_mm.datasets.transforms import cue_affinity as t_affinity
    from ehm_mm.datasets.transforms import patch_cues as t_cues
    from ehm_mm.datasets.transforms.evolved_hierarchical_mask_generator import (  # noqa: E501
        cue_affinity as m_affinity,
    )
    from ehm_mm.datasets.transforms.evolved_hierarchical_mask_generator import (  # noqa: E501
        patch_cues as m_cues,
    )
    assert t_cues is m_cues is patch_cues is ehm_mm.patch_cues
    assert t_affinity is m_affinity is cue_affinity


@pytest.mark.parametrize('device', DEVICES)
def test_tensor_path_equals_numpy_path(device):
    imgs = _images()
    ref_cues = patch_cues(imgs, 8)  # the transform's uint8 array path
    ref = cue_affinity(ref_cues)
    assert ref_cues.shape == (3, 16, 5) and ref.shape == (3, 16, 16)
    # the same pixels as a float tensor on the device: the same cues
    x = torch.from_numpy(imgs).float().to(device)
    with mock.patch.object(torch.Tensor, 'numpy',
                           side_effect=AssertionError('host round trip')):
        cues = patch_cues(x, 8)
        affinity = pixel_affinity(x.permute(0, 3, 1, 2), 8)
    assert cues.device == x.device and affinity.device == x.device
    assert torch.equal(cues.cpu(), ref_cues)
    torch.testing.assert_close(affinity.cpu(), ref, rtol=1e-5, atol=1e-5)
    # normalised and de-normalised again (what EHMMAE does): same to
    # float rounding
    mean = torch.tensor([123.675, 116.28, 103.53], device=device)
    std = torch.tensor([58.395, 57.12, 57.375], device=device)
    back = ((x - mean) / std) * std + mean
    torch.testing.assert_close(
        pixel_affinity(back.permute(0, 3, 1, 2), 8).cpu(), ref, rtol=1e-4,
        atol=1e-5)


def test_single_image_and_batch_agree_and_inputs_are_not_changed():
    imgs = _images(2)
    batch = patch_cues(imgs, 8)
    for i in range(2):
        assert torch.equal(patch_cues(imgs[i], 8), batch[i])
    floats = imgs.astype(np.float32)
    copy = floats.copy()
    patch_cues(floats, 8)
    tensor = torch.from_numpy(copy.copy())
    patch_cues(tensor, 8)
    assert np.array_equal(floats, copy)  # shared memory not divided by 255
    assert torch.equal(tensor, torch.from_numpy(copy))


def test_pixel_affinity_ignores_autocast_and_gradients():
    x = torch.from_numpy(_images(2)).float().permute(0, 3, 1, 2)
    x.requires_grad_(True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        affinity = pixel_affinity(x, 8)
    assert affinity.dtype == torch.float32 and not affinity.requires_grad
    torch.testing.assert_close(affinity, pixel_affinity(x.detach(), 8))


@pytest.mark.parametrize('images, match', [
    (torch.zeros(3, 32, 32), r'\[B, C, H, W\]'),
    (torch.zeros(1, 3, 30, 32), 'not a multiple of the patch size 8'),
])
def test_pixel_affinity_refuses_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        pixel_affinity(images, 8)
