# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""How large the masked pieces of a mask source are, for size matching.

The masking study compares sources whose masks should remove pieces of the
same size at the same point of training. :func:`node_size_report` makes a
source's masks and reports three sizes in patches, each a batch mean:

* ``masked_node_size``: the mean size of the nodes the masks cover, what
  the model logs as ``mask_node_size`` (:class:`MaskingResult`
  ``node_size``; None for a source whose masks are not made of nodes);
* ``level_node_size``: the mean node size of the tree level each mask is
  cut from, ``N / num_nodes``; it depends on the trees and depths only,
  not on which nodes were drawn, so sources with the same trees agree
  exactly (None without a tree);
* ``masked_region_size`` and ``visible_region_size``: the mean size of the
  4-connected regions of masked (visible) patches (:func:`region_size`),
  defined for every source. At ratio 0.75 the masked patches mostly form
  one region, so the visible regions (the holes of the mask) show the
  scale of a pattern, e.g. of noise masks, better.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .mask_source import MaskingResult, MaskSource


def component_labels(mask: Tensor, grid_size: Sequence[int]) -> Tensor:
    """Label the 4-connected regions of the selected patches of every image.

    Each selected patch takes the smallest patch index of its region,
    propagated to the 4 neighbours ``h * w`` times (the longest path in a
    region), so the shapes are static and nothing is read to the host.

    Args:
        mask (Tensor): float ``[B, N]``, 1 = selected (e.g. masked).
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tensor: LongTensor ``[B, N]``, the region label of every selected
        patch, ``N`` for the others.
    """
    h, w = grid_size
    batch, num = mask.shape
    masked = mask.view(batch, 1, h, w) > 0
    none = torch.full_like(masked, num, dtype=torch.long)
    index = torch.arange(num, device=mask.device).view(1, 1, h, w)
    labels = torch.where(masked, index, none)  # [B, 1, h, w]
    for _ in range(num):
        # min over the 4-neighbourhood: max-pool of the negated labels
        padded = F.pad(-labels.float(), (1, 1, 1, 1), value=-float(num))
        up_down = padded[..., :-2, 1:-1].maximum(padded[..., 2:, 1:-1])
        left_right = padded[..., 1:-1, :-2].maximum(padded[..., 1:-1, 2:])
        neighbour = (-up_down.maximum(left_right)).long()
        labels = torch.where(masked, labels.minimum(neighbour), none)
    return labels.view(batch, num)


def region_size(mask: Tensor, grid_size: Sequence[int]) -> Tensor:
    """Mean size in patches of the 4-connected selected regions per image.

    Args:
        mask (Tensor): float ``[B, N]``, 1 = selected (e.g. masked).
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tensor: float ``[B]`` (0 for an image without selected patches).
    """
    batch, num = mask.shape
    labels = component_labels(mask, grid_size)
    sizes = torch.zeros(batch, num + 1, device=mask.device).scatter_add_(
        1, labels, torch.ones_like(mask))[:, :num]  # [B, N] region sizes
    regions = (sizes > 0).sum(1)
    return sizes.sum(1) / regions.clamp(min=1)


def level_node_size(result: MaskingResult) -> Optional[Tensor]:
    """Mean node size of the tree level each mask is cut from.

    Args:
        result (MaskingResult): Masks with their ``hierarchy`` and
            ``depth`` (the level).

    Returns:
        Tensor | None: float ``[B]``, ``N / num_nodes[b, depth[b]]``; None
        when the result has no tree or no node sizes (noise masks).
    """
    tree = result.hierarchy
    if tree is None or result.node_size is None:
        return None
    counts = tree.num_nodes.gather(1, result.depth[:, None]).squeeze(1)
    return tree.num_patches / counts.float()


def node_size_report(source: MaskSource,
                     affinity: Optional[Tensor] = None,
                     depth: Union[int, Sequence[int], None] = None,
                     progress: Optional[float] = None,
                     batch_size: Optional[int] = None,
                     generator: Optional[torch.Generator] = None
                     ) -> Dict[str, Optional[Tensor]]:
    """The sizes of the pieces a source masks, per image.

    Calls ``source(affinity, progress=..., depth=..., generator=...,
    batch_size=...)`` once (see :meth:`MaskSource.forward`); a source that
    draws no depth (block, noise masks) may get neither ``depth`` nor
    ``progress``.

    Args:
        source (MaskSource): The mask source.
        affinity (Tensor, optional): ``[B, N, N]`` for a source that
            requires one. Defaults to None.
        depth (int | Sequence[int], optional): The depths. Defaults to None.
        progress (float, optional): The training progress instead.
            Defaults to None.
        batch_size (int, optional): ``B`` without an affinity or depth
            list. Defaults to None.
        generator (torch.Generator, optional): Random source.
            Defaults to None.

    Returns:
        Dict[str, Tensor | None]: float ``[B]`` each: ``masked_node_size``,
        ``level_node_size`` (None without nodes), ``masked_region_size``
        and ``visible_region_size`` (see the module doc).
    """
    result = source(affinity, progress=progress, depth=depth,
                    generator=generator, batch_size=batch_size)
    return dict(masked_node_size=result.node_size,
                level_node_size=level_node_size(result),
                masked_region_size=region_size(result.mask,
                                               source.grid_size),
                visible_region_size=region_size(1 - result.mask,
                                                source.grid_size))
