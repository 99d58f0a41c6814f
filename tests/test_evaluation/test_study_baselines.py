# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from ehm_mm.evaluation.study_baselines import (
    all_background_miou,
    colour_histogram_features,
    noise_tree_best_iou,
    patch_colour_features,
    root_only_best_iou,
    thumbnail_features,
)


def test_pixel_features_on_a_known_image():
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, :2, :2] = 255.0  # top-left patch red
    patches = patch_colour_features(image, (2, 2))
    assert patches.shape == (1, 2, 2, 3)
    assert patches[0, 0, 0].tolist() == [255.0, 0.0, 0.0]
    assert patches[0, 1, 1].tolist() == [0.0, 0.0, 0.0]
    assert thumbnail_features(image, (2, 2)).shape == (1, 12)
    hist = colour_histogram_features(image, bins=2)
    # 4 red pixels (bin r=1, g=0, b=0 -> 4), 12 black (bin 0).
    assert hist[0, 0] == pytest.approx(0.75) and hist[0, 4] == 0.25
    # Colour only: moving the red block does not change the histogram.
    moved = torch.roll(image, shifts=2, dims=3)
    assert torch.equal(colour_histogram_features(moved, bins=2), hist)
    with pytest.raises(ValueError, match='whole number'):
        patch_colour_features(image, (3, 3))


def test_floors_on_known_masks():
    masks = torch.zeros(2, 8, 8)
    masks[0, :4, :4] = 1  # a quarter of the image
    masks[1] = 1  # the whole image
    assert root_only_best_iou(masks, (2, 2)).tolist() == pytest.approx(
        [0.25, 1.0])
    noise = noise_tree_best_iou(masks, (2, 2),
                                torch.Generator().manual_seed(0))
    # The quarter is one patch of the 2 x 2 grid: every tree holds it.
    assert noise.tolist() == pytest.approx([1.0, 1.0])
    assert all_background_miou(torch.tensor([0, 0, 0, 1]), 7) == \
        pytest.approx(100.0 * 0.75 / 2)
    assert all_background_miou(torch.tensor([0, 0]), 7) == 100.0


def test_noise_tree_floor_lies_between_root_and_perfect():
    masks = torch.zeros(16, 32, 32)
    masks[:, 8:24, 4:20] = 1  # 4 x 4 of the 8 x 8 patches (4 px each)
    iou = noise_tree_best_iou(masks, (8, 8),
                              torch.Generator().manual_seed(0))
    root = root_only_best_iou(masks, (8, 8))
    assert (iou >= root).all() and (iou <= 1).all()
    assert iou.mean() > root.mean() + 0.1
