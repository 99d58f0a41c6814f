# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Patch affinity from the image's own low-level cues (no network).

Per patch a cue vector, its mean colour and a gradient texture statistic
(:func:`patch_cues`); two patches are as similar as their cue vectors are
close (:func:`cue_affinity`). The data pipeline's
``EvolvedHierarchicalMaskGenerator`` builds its trees from it in the
dataloader workers (uint8 ``[H, W, C]`` images); ``EHMMAE`` and
``EHMSimMIM`` with ``affinity_source='pixels'`` do so in the training step
on the inputs' device (:func:`pixel_affinity`; for the masking study's
"pixel tree" arm).
This affinity is this project's design, not the paper's (which takes it
from the teacher's attention).
"""
from typing import Union

import numpy as np
import torch
from torch import Tensor


def patch_cues(img: Union[np.ndarray, Tensor], patch_size: int) -> Tensor:
    """Low-level cues per patch: mean colour and gradient texture.

    For each ``patch_size`` x ``patch_size`` patch (row-major): the mean of
    every channel and the mean absolute horizontal and vertical differences
    of the channel-mean intensity inside the patch, all on a 0-1 scale.

    A tensor stays on its device (no host round trip); an array is read
    into a CPU tensor. Neither is changed.

    Args:
        img (np.ndarray | Tensor): Image ``[H, W, C]`` or a batch of them
            ``[B, H, W, C]`` (``uint8`` 0-255 or float 0-255), ``H`` and
            ``W`` multiples of ``patch_size``.
        patch_size (int): Patch side in pixels.

    Returns:
        Tensor: float32 ``[N, C + 2]`` (``[B, N, C + 2]`` for a batch),
        ``N = (H / p) * (W / p)``; columns are the ``C`` mean colours, then
        horizontal and vertical texture.
    """
    if not isinstance(img, Tensor):
        img = torch.as_tensor(np.ascontiguousarray(img))
    x = img.float().div(255.0)
    *batch, height, width, channels = x.shape
    p = patch_size
    gh, gw = height // p, width // p
    x = x.reshape(*batch, gh, p, gw, p, channels)
    first = len(batch)  # the gh axis
    rows, cols = first + 1, first + 3
    colour = x.mean(dim=(rows, cols))  # [..., gh, gw, C]
    grey = x.mean(dim=-1)  # [..., gh, p, gw, p]
    tex_x = (grey[..., 1:] - grey[..., :-1]).abs().mean(dim=(rows, cols))
    tex_y = (grey.narrow(rows, 1, p - 1) - grey.narrow(rows, 0, p - 1)
             ).abs().mean(dim=(rows, cols))
    cues = torch.cat([colour, tex_x[..., None], tex_y[..., None]], dim=-1)
    return cues.reshape(*batch, gh * gw, channels + 2)


def cue_affinity(cues: Tensor,
                 colour_weight: float = 1.0,
                 texture_weight: float = 1.0) -> Tensor:
    """Patch affinity: minus the squared distance of weighted cue vectors.

    With average linkage (what the tree builder uses), the similarity of
    two nodes is then minus the mean squared distance between their
    patches, ``-(|mu_P - mu_Q|^2 + var_P + var_Q)``: nodes merge when their
    mean cues agree and each is homogeneous.

    Args:
        cues (Tensor): ``[..., N, C + 2]`` from :func:`patch_cues` (a
            leading batch dimension is fine).
        colour_weight (float): Scale of the colour columns. Defaults to 1.
        texture_weight (float): Scale of the two texture columns.
            Defaults to 1.

    Returns:
        Tensor: float32 ``[..., N, N]``, symmetric, 0 on the diagonal.
    """
    weights = cues.new_full((cues.shape[-1], ), colour_weight)
    weights[-2:] = texture_weight
    feats = cues * weights  # [..., N, D]
    return -torch.cdist(feats, feats).square()


def pixel_affinity(images: Tensor,
                   patch_size: int,
                   colour_weight: float = 1.0,
                   texture_weight: float = 1.0) -> Tensor:
    """Patch affinity ``[B, N, N]`` of a batch of channels-first images.

    ``cue_affinity(patch_cues(images as [B, H, W, C]))``, on the images'
    device, without gradients and in float32 whatever an enclosing
    autocast says.

    Args:
        images (Tensor): ``[B, C, H, W]`` on the 0-255 scale (de-normalised
            model inputs), ``H`` and ``W`` multiples of ``patch_size``.
        patch_size (int): Patch side in pixels (the model's patch).
        colour_weight (float): Scale of the colour cues. Defaults to 1.
        texture_weight (float): Scale of the texture cues. Defaults to 1.

    Returns:
        Tensor: float32 ``[B, N, N]``, patches in row-major grid order.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError('images must be a tensor [B, C, H, W], got '
                         f'{getattr(images, "shape", type(images))}')
    height, width = images.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f'image size {height}x{width} is not a multiple of '
                         f'the patch size {patch_size}')
    with torch.no_grad(), torch.autocast(images.device.type, enabled=False):
        cues = patch_cues(images.float().permute(0, 2, 3, 1), patch_size)
        return cue_affinity(cues, colour_weight, texture_weight)
