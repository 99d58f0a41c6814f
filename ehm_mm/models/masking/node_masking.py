# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Mask Generation: random masks made of whole tree nodes.

Torch only (design section 3). Every node of the chosen level draws a
uniform random score, every patch takes its node's score with its own
random value as tie-breaker, and the ``round(mask_ratio * N)`` patches with
the highest keys are masked. So every image masks exactly the same number
of patches, masks whole nodes and splits at most one node. At level 0 the
nodes are the patches and this is MAE's random masking, draw for draw.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .hierarchy import Hierarchy


@dataclass
class MaskingResult:
    """Masks for a batch, in the conventions of mmpretrain's ``MAEViT``.

    Args:
        mask (Tensor): float ``[B, N]``, 1 = masked, 0 = visible.
        ids_restore (Tensor): LongTensor ``[B, N]``, the inverse of the
            shuffle that puts visible patches first; ``MAEPretrainDecoder``
            unshuffles with it.
        ids_keep (Tensor): LongTensor ``[B, N_keep]``, the visible patches,
            ``x_visible = x.gather(1, ids_keep[..., None].expand(-1, -1, C))``.
        depth (Tensor): LongTensor ``[B]``, the tree level each image's mask
            is cut from.
        hierarchy (Hierarchy, optional): The trees the masks come from.
            Defaults to None.
    """

    mask: Tensor
    ids_restore: Tensor
    ids_keep: Tensor
    depth: Tensor
    hierarchy: Optional[Hierarchy] = None


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """How many patches a ratio masks: ``round(mask_ratio * N)``.

    mmpretrain's ``MAEViT.random_masking`` keeps ``int(N * (1 - ratio))``
    patches instead, i.e. it truncates the visible count. The two agree
    when ``N * ratio`` is an integer (``N = 196``, ratio ``0.75``) or its
    fraction exceeds ``.5``; when the fraction is below ``.5`` MAE masks
    one patch more (``N = 16``, ratio ``0.9``: MAE keeps 1, here 2), at
    exactly ``.5`` Python rounds half to even (``N = 10``, ratio ``0.45``:
    MAE keeps 5, here 6), and float error can make MAE's product fall just
    below an integer. Either way both take the visible patches from the
    same shuffle. This module always masks ``round(mask_ratio * N)``.

    Args:
        num_patches (int): ``N``.
        mask_ratio (float): The ratio in ``(0, 1)``.

    Returns:
        int: The number of masked patches.
    """
    return int(round(mask_ratio * num_patches))


def check_mask_ratio(mask_ratio: float) -> float:
    """Validate a mask ratio.

    Args:
        mask_ratio (float): Must lie in the open interval ``(0, 1)``.

    Returns:
        float: The ratio.
    """
    if (isinstance(mask_ratio, bool)
            or not isinstance(mask_ratio, (int, float))
            or not 0.0 < mask_ratio < 1.0 or math.isnan(mask_ratio)):
        raise ValueError(
            f'mask_ratio must be a number in (0, 1), got {mask_ratio!r}')
    return float(mask_ratio)


def mask_nodes(nodes: Tensor,
               mask_ratio: float,
               noise: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """Mask whole nodes in random order, ``round(mask_ratio * N)`` patches.

    One ``torch.rand(B, N)`` draw (or ``noise``) gives every patch its
    value ``u_i``; a node scores the value of its smallest patch index
    (independent of the values, so node scores are i.i.d. uniform whatever
    the node sizes).
    Patches are sorted by ``(rank of node score, rank of u_i)`` ascending,
    the first ``N - round(mask_ratio * N)`` are kept and the rest masked.
    When every node is one patch the order is ``argsort(u)``, exactly what
    ``MAEViT.random_masking`` computes from the same draw.

    Args:
        nodes (Tensor): LongTensor ``[B, N]``, each patch's node id (any
            ids in ``[0, N)``, e.g. ``hierarchy.level(d)``).
        mask_ratio (float): Fraction of patches to mask, in ``(0, 1)``.
        noise (Tensor, optional): float ``[B, N]``, the per-patch uniform
            values; None draws ``torch.rand(B, N)``. Defaults to None.
        generator (torch.Generator, optional): Random source for the draw;
            None uses the global one, as MAE does. Defaults to None.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: ``mask`` float ``[B, N]`` (1 =
        masked), ``ids_restore`` ``[B, N]`` and ``ids_keep``
        ``[B, N - round(mask_ratio * N)]``.
    """
    mask_ratio = check_mask_ratio(mask_ratio)
    if nodes.dim() != 2 or nodes.dtype != torch.long:
        raise ValueError('nodes must be a LongTensor [B, N], got '
                         f'{nodes.dtype} {list(nodes.shape)}')
    batch, num = nodes.shape
    if noise is None:
        noise = torch.rand(batch, num, device=nodes.device,
                           generator=generator)
    elif noise.shape != nodes.shape:
        raise ValueError(f'noise must have the shape of nodes {[batch, num]}'
                         f', got {list(noise.shape)}')
    ids_shuffle = torch.argsort(noise, dim=1)  # MAE's order at level 0
    index = torch.arange(num, device=nodes.device).expand(batch, num)
    rank = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, index)
    first = torch.full_like(nodes, num).scatter_reduce(
        1, nodes, index, 'amin')  # smallest patch of every node
    node_rank = rank.gather(1, first.gather(1, nodes))
    ids_shuffle = torch.argsort(node_rank * num + rank, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    num_keep = num - num_masked(num, mask_ratio)
    ids_keep = ids_shuffle[:, :num_keep]
    mask = torch.ones(batch, num, device=nodes.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return mask, ids_restore, ids_keep
