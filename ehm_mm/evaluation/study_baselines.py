# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Reference figures a masking study reports beside its arms.

Features that need no learning (raw pixels, colour alone) and the floors of
the hierarchy and segmentation metrics: what a probe or a tree reaches
without any pretraining, so that an arm's number can be read against them.
All functions are pure and take images on the 0-255 scale.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.masking.hierarchy import build_hierarchy
from .metrics.hierarchy_iou import best_node_iou
from .metrics.patch_seg_probe import mean_iou


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError('images must be [B, 3, H, W], got shape '
                         f'{tuple(images.shape)}')


def patch_colour_features(images: Tensor, grid_size: Sequence[int]) -> Tensor:
    """Mean colour of every patch: raw-pixel patch features.

    Args:
        images (Tensor): ``[B, 3, H, W]``, ``H`` and ``W`` multiples of the
            grid.
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tensor: float ``[B, h, w, 3]``.
    """
    _check_images(images)
    h, w = grid_size
    if images.shape[2] % h or images.shape[3] % w:
        raise ValueError(f'images of size {tuple(images.shape[2:])} are not '
                         f'a whole number of patches of the {h}x{w} grid')
    pooled = F.avg_pool2d(images.float(),
                          (images.shape[2] // h, images.shape[3] // w))
    return pooled.permute(0, 2, 3, 1)


def thumbnail_features(images: Tensor, grid_size: Sequence[int]) -> Tensor:
    """The flattened mean-colour thumbnail of each image (colour + layout).

    Args:
        images (Tensor): ``[B, 3, H, W]``.
        grid_size (Sequence[int]): The thumbnail grid ``(h, w)``.

    Returns:
        Tensor: float ``[B, h * w * 3]``.
    """
    return patch_colour_features(images, grid_size).flatten(1)


def colour_histogram_features(images: Tensor, bins: int = 4) -> Tensor:
    """Joint RGB histogram of each image: colour without any layout.

    Args:
        images (Tensor): ``[B, 3, H, W]`` on the 0-255 scale.
        bins (int): Bins per channel. Defaults to 4.

    Returns:
        Tensor: float ``[B, bins**3]``, each row summing to 1.
    """
    _check_images(images)
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f'bins must be a positive int, got {bins!r}')
    q = (images.float().clamp(0, 255) * bins / 256.0).long().clamp(
        max=bins - 1)  # [B, 3, H, W]
    index = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]  # [B, H, W]
    hist = torch.zeros(images.shape[0], bins**3)
    hist.scatter_add_(1, index.flatten(1), torch.ones(index.flatten(1).shape))
    return hist / hist.sum(1, keepdim=True)


def root_only_best_iou(object_masks: Tensor,
                       grid_size: Sequence[int]) -> Tensor:
    """Best-IoU of a tree that is only its root: the whole image.

    Args:
        object_masks (Tensor): ``[B, H, W]``, nonzero = object.
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tensor: float64 ``[B]``, the IoU of the object with the image.
    """
    h, w = grid_size
    root = torch.zeros(1, h, w, dtype=torch.long)
    return torch.stack([best_node_iou(root, m) for m in object_masks])


def noise_tree_best_iou(object_masks: Tensor,
                        grid_size: Sequence[int],
                        generator: Optional[torch.Generator] = None,
                        **hierarchy_cfg) -> Tensor:
    """Best-IoU of trees built on i.i.d. noise (no image content).

    Args:
        object_masks (Tensor): ``[B, H, W]``, nonzero = object.
        grid_size (Sequence[int]): The patch grid ``(h, w)``.
        generator (torch.Generator, optional): Source of the noise.
            Defaults to None.
        **hierarchy_cfg: Options of :func:`build_hierarchy`.

    Returns:
        Tensor: float64 ``[B]``.
    """
    h, w = grid_size
    num = h * w
    noise = torch.rand(object_masks.shape[0], num, num, generator=generator)
    noise = (noise + noise.transpose(1, 2)) / 2
    tree = build_hierarchy(noise, (h, w), **hierarchy_cfg)
    ancestors = tree.ancestors.reshape(tree.batch_size, tree.num_levels, h,
                                       w)
    return torch.stack([
        best_node_iou(ancestors[i], m) for i, m in enumerate(object_masks)
    ])


def all_background_miou(patch_labels: Tensor, num_classes: int) -> float:
    """mIoU (percent) of predicting background (label 0) for every patch.

    Args:
        patch_labels (Tensor): ``[P]`` true patch labels.
        num_classes (int): Number of classes, background included.

    Returns:
        float: The mean IoU over the classes present, in percent.
    """
    miou, _ = mean_iou(torch.zeros_like(patch_labels), patch_labels,
                       num_classes)
    return 100.0 * miou
