# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""How masks relate to objects: a pure function of nodes, masks and labels.

A mask cut from a tree covers whole nodes (at most one split). Whether
those nodes follow the objects of the image is what separates a
content-aware mask source from a content-free one of the same node sizes.
:func:`mask_object_alignment` measures it per image from three tensors on
the patch grid; :func:`patch_object_ids` turns a per-pixel object mask into
the per-patch labels it needs; :func:`masking_result_alignment` applies it
to a mask source's :class:`~ehm_mm.models.masking.MaskingResult`.
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ehm_mm.models.masking import MaskingResult


def patch_object_ids(object_mask: Tensor, grid_size: Sequence[int]) -> Tensor:
    """Per-patch object id: the majority label of the patch's pixels.

    Args:
        object_mask (Tensor): ``[B, H, W]`` integer labels, 0 = background,
            ``k > 0`` = object ``k``; ``H``, ``W`` multiples of the grid.
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tensor: LongTensor ``[B, h * w]``, row-major; ties go to the smaller
        label (background wins a half-covered patch).
    """
    if object_mask.dim() != 3:
        raise ValueError('object_mask must be [B, H, W], got shape '
                         f'{tuple(object_mask.shape)}')
    h, w = grid_size
    batch, height, width = object_mask.shape
    if height % h or width % w:
        raise ValueError(f'object mask of size {height}x{width} is not a '
                         f'whole number of patches of the {h}x{w} grid')
    labels = object_mask.long()
    if int(labels.min()) < 0:
        raise ValueError('object ids must be >= 0 (0 = background)')
    num_ids = int(labels.max()) + 1
    counts = F.one_hot(labels, num_ids).reshape(batch, h, height // h, w,
                                                width // w, num_ids)
    return counts.sum(dim=(2, 4)).reshape(batch, h * w, num_ids).argmax(-1)


def mask_object_alignment(nodes: Tensor, mask: Tensor,
                          object_ids: Tensor) -> Dict[str, Tensor]:
    """Per-image alignment of a node mask with the objects.

    A node is *masked* when any of its patches is masked (the one split
    node counts whole, as ``MaskingResult.node_size`` counts it).

    Args:
        nodes (Tensor): ``[B, N]`` integer node id of every patch at the
            level the mask was cut from (ids in ``[0, N)``).
        mask (Tensor): ``[B, N]`` bool, True = masked.
        object_ids (Tensor): ``[B, N]`` integer object id per patch,
            0 = background (see :func:`patch_object_ids`).

    Returns:
        dict[str, Tensor]: float64 ``[B]`` each:

        - ``node_in_object``: share of the masked nodes whose patches all
          belong to one object;
        - ``node_in_background``: share of masked nodes wholly background;
        - ``node_mixed``: the rest (the three shares sum to 1);
        - ``object_coverage``: share of the object patches that are masked
          (NaN for an image without object patches);
        - ``masked_on_object``: share of the masked patches that lie on an
          object (NaN for an image without masked patches).
    """
    if nodes.dim() != 2 or mask.shape != nodes.shape or (object_ids.shape
                                                         != nodes.shape):
        raise ValueError(
            'nodes, mask and object_ids must all be [B, N], got '
            f'{tuple(nodes.shape)}, {tuple(mask.shape)} and '
            f'{tuple(object_ids.shape)}')
    if mask.dtype != torch.bool:
        raise ValueError(f'mask must be bool, got {mask.dtype}')
    batch, num = nodes.shape
    nodes = nodes.long()
    if int(nodes.min()) < 0 or int(nodes.max()) >= num:
        raise ValueError(f'node ids must lie in [0, {num}), got range '
                         f'[{int(nodes.min())}, {int(nodes.max())}]')
    ids = object_ids.long()
    big = int(ids.max()) + 1
    # Per node: is it masked, lowest and highest object id. [B, N]
    node_masked = torch.zeros(batch, num, dtype=torch.long).scatter_reduce(
        1, nodes, mask.long(), 'amax', include_self=True)
    low = torch.full((batch, num), big, dtype=torch.long).scatter_reduce(
        1, nodes, ids, 'amin', include_self=True)
    high = torch.full((batch, num), -1, dtype=torch.long).scatter_reduce(
        1, nodes, ids, 'amax', include_self=True)
    masked = node_masked.bool()
    pure = low == high
    count = masked.sum(1).double()
    in_object = (masked & pure & (low > 0)).sum(1) / count
    in_background = (masked & pure & (low == 0)).sum(1) / count
    on_object = ids > 0
    coverage = (mask & on_object).sum(1) / on_object.sum(1).double()
    masked_on_object = (mask & on_object).sum(1) / mask.sum(1).double()
    return dict(
        node_in_object=in_object.double(),
        node_in_background=in_background.double(),
        node_mixed=((masked & ~pure).sum(1) / count).double(),
        object_coverage=coverage.double(),
        masked_on_object=masked_on_object.double())


def mask_level_nodes(result: MaskingResult) -> Tensor:
    """Each patch's node at the tree level each image's mask is cut from.

    Args:
        result (MaskingResult): Masks with ``depth`` (the level) and
            ``hierarchy``; a result without a tree (MAE's random masks)
            counts every patch as its own node.

    Returns:
        Tensor: LongTensor ``[B, N]``, node ids in ``[0, N)``.
    """
    batch, num = result.mask.shape
    tree = result.hierarchy
    if tree is None:
        return torch.arange(num, device=result.mask.device).expand(batch, num)
    if tree.ancestors.shape[::2] != (batch, num):
        raise ValueError(
            f'the masks are [{batch}, {num}] but the tree is '
            f'{list(tree.ancestors.shape)} ([B, L, N])')
    if int(result.depth.max()) >= tree.num_levels:
        raise ValueError(
            f'a mask is cut from level {int(result.depth.max())} but the '
            f'tree has {tree.num_levels} levels')
    index = result.depth.long()[:, None, None].expand(batch, 1, num)
    return tree.ancestors.gather(1, index).squeeze(1)


def masking_result_alignment(result: MaskingResult,
                             object_ids: Tensor) -> Dict[str, Tensor]:
    """:func:`mask_object_alignment` of a mask source's masks.

    The nodes are those of the tree that made the masks, at the level each
    mask is cut from (:func:`mask_level_nodes`): for shuffled attention the
    other image's tree, so its nodes are scored against the objects of the
    image they mask.

    Args:
        result (MaskingResult): The masks (``mask`` 1 = masked).
        object_ids (Tensor): ``[B, N]`` object id per patch, 0 = background
            (:func:`patch_object_ids`).

    Returns:
        dict[str, Tensor]: As :func:`mask_object_alignment`, float64 ``[B]``
        each, on the CPU.
    """
    nodes = mask_level_nodes(result).cpu()
    return mask_object_alignment(nodes, result.mask.cpu() > 0.5,
                                 object_ids.cpu())
