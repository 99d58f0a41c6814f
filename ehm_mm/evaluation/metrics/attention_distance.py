# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Mean attention distance per layer of a ViT (the paper's Fig. 2(b)).

The distance between two patches is the Euclidean distance of their centres
in pixels; a layer's mean attention distance is the attention-weighted mean
of that distance over all patch-to-patch attention of all heads, queries
and images (attention to the CLS token left out), as in Dosovitskiy et al.
(ViT) and the masked-modelling analyses that plot it per layer. Small
values: the layer looks locally (texture); large: globally (shape,
context).
"""
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ehm_mm.models.masking import attention_affinity


def patch_distances(grid_size: Tuple[int, int],
                    patch_pixels: Tuple[float, float]) -> Tensor:
    """Pairwise centre distances of a patch grid in pixels.

    Args:
        grid_size (tuple[int, int]): ``(h, w)``.
        patch_pixels (tuple[float, float]): Patch height and width in
            pixels.

    Returns:
        Tensor: float64 ``[h * w, h * w]``.
    """
    h, w = grid_size
    rows = torch.arange(h, dtype=torch.float64).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float64).repeat(h)
    dy = (rows[:, None] - rows[None, :]) * patch_pixels[0]
    dx = (cols[:, None] - cols[None, :]) * patch_pixels[1]
    return (dy**2 + dx**2).sqrt()


def _grid_of(num_patches: int, height: int, width: int) -> Tuple[int, int]:
    """The patch grid of an image: ``h * w = N`` with ``h / w = H / W``."""
    h = int(round(math.sqrt(num_patches * height / width)))
    if h < 1 or num_patches % h or height % h or width % (num_patches // h):
        raise ValueError(f'cannot place {num_patches} patches on a '
                         f'{height}x{width} image as a regular grid')
    return h, num_patches // h


def mean_attention_distance(vit: nn.Module,
                            images: Tensor,
                            layers: Optional[Sequence[int]] = None,
                            batch_size: int = 64) -> Tensor:
    """Mean attention distance in pixels of every chosen layer.

    Reads each layer's attention with
    :func:`~ehm_mm.models.masking.attention_affinity` (head-averaged
    probabilities, CLS dropped, symmetrised; symmetrising does not change
    the weighted mean because the distance is symmetric).

    Args:
        vit (nn.Module): A ViT that ``attention_affinity`` accepts (e.g.
            mmpretrain's ``VisionTransformer`` / ``MAEViT``).
        images (Tensor): ``[M, C, H, W]`` normalised images.
        layers (Sequence[int], optional): Layer indices; None means all.
            Defaults to None.
        batch_size (int): Images per forward. Defaults to 64.

    Returns:
        Tensor: float64 ``[len(layers)]``, pixels.
    """
    if not hasattr(vit, 'layers') and hasattr(vit, 'module'):
        vit = vit.module
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError('images must be a tensor [M, C, H, W], got '
                         f'{getattr(images, "shape", type(images))}')
    if layers is None:
        layers = range(len(vit.layers))
    layers = list(layers)
    height, width = images.shape[-2:]
    weighted = torch.zeros(len(layers), dtype=torch.float64)
    mass = torch.zeros(len(layers), dtype=torch.float64)
    dist = None
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start:start + batch_size]
        for i, layer in enumerate(layers):
            attn = attention_affinity(vit, chunk, layers=[layer]).double()
            attn = attn.cpu()
            if dist is None:
                grid = _grid_of(attn.shape[-1], height, width)
                dist = patch_distances(
                    grid, (height / grid[0], width / grid[1]))
            weighted[i] += (attn * dist).sum()
            mass[i] += attn.sum()
    return weighted / mass
