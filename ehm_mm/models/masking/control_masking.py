# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Control mask generators for the masking study.

Two registered modules with the interface of
:class:`~ehm_mm.models.masking.EvolvedHierarchicalMasking` (``grid_size``
at build, ``draw_depths``, ``hierarchy``, ``forward(affinity, progress=...
| depth=..., generator=...)``), so ``EHMMAE`` trains with them unchanged,
and neither reads the image:

* :class:`BlockwiseMasking`: BEiT / SimMIM-style random rectangles of
  patches at the same exact ratio (the paper's "block" masks);
* :class:`RandomHierarchyMasking`: EHM's own tree builder and depth schedule
  on a random affinity, i.e. contiguous random regions with the node sizes
  of EHM's trees but no image content (the control for "is it the
  attention-derived hierarchy or any contiguous chunks?").

Both set ``requires_affinity = False`` (``EHMMAE`` then skips the teacher's
attention for the masks): the affinity argument is read only for its batch
size and device and may be None; the batch size then comes from ``depth``
(a list) or ``batch_size``, the device from ``generator``.
"""
import math
import random
from typing import List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from .evolved_masking import (
    EvolvedHierarchicalMasking,
    MaskingResult,
    check_mask_ratio,
    masked_node_size,
    num_masked,
)
from .hierarchy import Hierarchy, build_hierarchy, check_grid_size


def _batch_and_device(affinity: Optional[Tensor], depth,
                      batch_size: Optional[int],
                      generator: Optional[torch.Generator]) -> tuple:
    """Batch size and device of a call without (or ignoring) an affinity.

    Args:
        affinity (Tensor, optional): Any tensor ``[B, ...]``.
        depth: The ``depth`` argument; a list gives ``B``.
        batch_size (int, optional): ``B`` otherwise.
        generator (torch.Generator, optional): Its device is used without
            an affinity (CPU when None).

    Returns:
        tuple: ``(B, device)``.
    """
    if affinity is not None:
        if not isinstance(affinity, Tensor) or affinity.dim() < 1:
            raise ValueError('affinity must be a tensor [B, ...] or None, got '
                             f'{type(affinity).__name__}')
        batch, device = affinity.shape[0], affinity.device
    else:
        device = (generator.device if generator is not None else
                  torch.device('cpu'))
        if isinstance(depth, (list, tuple)):
            batch = len(depth)
        elif isinstance(depth, Tensor) and depth.dim() == 1:
            batch = depth.shape[0]
        else:
            batch = batch_size
    if (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError('without an affinity the batch size comes from a '
                         'depth list or batch_size, a positive int; got '
                         f'{batch!r}')
    if batch_size is not None and batch_size != batch:
        raise ValueError(f'batch_size {batch_size} differs from the batch '
                         f'{batch} of the affinity / depth')
    return batch, device


def compact_node_ids(nodes: Tensor, num_ids: int) -> Tensor:
    """Renumber node ids ``0 .. K-1`` in order of each node's first patch.

    The numbering :class:`~ehm_mm.models.masking.Hierarchy` uses. No host
    reads.

    Args:
        nodes (Tensor): LongTensor ``[B, N]``, any ids in ``[0, M)``.
        num_ids (int): ``M``, an upper bound of the ids.

    Returns:
        Tensor: LongTensor ``[B, N]``, the same partition, ids compact.
    """
    batch, num = nodes.shape
    index = torch.arange(num, device=nodes.device).expand(batch, num)
    first = torch.full((batch, num_ids), num, dtype=torch.long,
                       device=nodes.device)
    first = first.scatter_reduce(1, nodes, index, 'amin')  # [B, M]
    rep = first.gather(1, nodes)  # [B, N] first patch of each patch's node
    is_rep = torch.zeros(batch, num + 1, dtype=torch.long,
                         device=nodes.device)
    is_rep.scatter_(1, rep, 1)
    new_id = is_rep.cumsum(1) - 1  # [B, N + 1]
    return new_id.gather(1, rep)


def _order_to_result(order: Tensor, num_mask: int, depth: Tensor,
                     hierarchy: Optional[Hierarchy]) -> MaskingResult:
    """Turn a masking order (first = masked first) into a MaskingResult.

    Args:
        order (Tensor): LongTensor ``[B, N]``, patches in masking order.
        num_mask (int): How many patches are masked.
        depth (Tensor): LongTensor ``[B]``.
        hierarchy (Hierarchy, optional): The nodes the masks were cut from.

    Returns:
        MaskingResult: In ``MAEViT``'s conventions (visible first).
    """
    batch, num = order.shape
    ids_shuffle = order.flip(1)  # visible patches first
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    num_keep = num - num_mask
    mask = torch.ones(batch, num, device=order.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return MaskingResult(mask, ids_restore, ids_shuffle[:, :num_keep], depth,
                         hierarchy)


class _ContentFreeMasking:
    """The ``forward`` of the control maskings, which ignore the affinity.

    It finds the batch size and device (:func:`_batch_and_device`) and
    hands them to the subclass's ``_make_masks``.
    """

    #: EHMMAE may skip the teacher's affinity: these masks ignore it.
    requires_affinity = False

    def forward(self,
                affinity: Optional[Tensor] = None,
                progress: Optional[float] = None,
                depth: Union[int, Sequence[int], Tensor, None] = None,
                generator: Optional[torch.Generator] = None,
                batch_size: Optional[int] = None) -> MaskingResult:
        """Make masks for a batch.

        Args:
            affinity (Tensor, optional): Only its batch size and device are
                used. Defaults to None.
            progress (float, optional): Training progress in ``[0, 1]``
                (block masks do not evolve and ignore it). Defaults to None.
            depth (int | Sequence[int] | Tensor, optional): Depths instead
                of ``progress`` (exactly one of the two; block masks use
                only its length, the batch size when a list). Defaults to
                None.
            generator (torch.Generator, optional): Random source (and,
                without an affinity, the device); None uses the global one
                on the CPU. Defaults to None.
            batch_size (int, optional): ``B`` when neither ``affinity`` nor
                a depth list gives it. Defaults to None.

        Returns:
            MaskingResult: The subclass's masks (its ``_make_masks``).
        """
        batch, device = _batch_and_device(affinity, depth, batch_size,
                                          generator)
        return self._make_masks(affinity, batch, device, progress, depth,
                                generator)


@MODELS.register_module()
class BlockwiseMasking(_ContentFreeMasking, BaseModule):
    """Random rectangular blocks of patches (BEiT / SimMIM style).

    Every image draws ``num_blocks`` rectangles: area uniform in
    ``[min_block_patches, max_block_patches]`` patches, aspect ratio
    log-uniform in ``[min_aspect, 1 / min_aspect]``, position uniform on the
    grid (BEiT's ``MaskingGenerator`` recipe). A patch belongs to the first
    block that covers it. Patches are masked block by block in the order
    drawn, in random order inside a block, until exactly
    ``round(mask_ratio * N)`` are masked; so every mask is a union of whole
    blocks plus part of one (BEiT instead shrinks its last blocks to what is
    left). If the blocks cover fewer patches than needed, the rest are
    random single patches (documented fallback; with the default
    ``num_blocks`` it happens only for tiny grids).

    Vectorised over the batch (no per-image loop), static shapes. The
    result's ``hierarchy`` has two levels: the patches and the block
    pieces (a block minus earlier blocks; patches in no block are their
    own pieces), so tools that draw hierarchies can draw the blocks;
    ``depth`` is 1 for every image.

    Random draws from ``generator``, in order: ``torch.rand(B, N)`` (order
    inside blocks), then ``torch.rand(B, K, 4)`` (area, aspect, row,
    column).

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` (``EHMMAE``
            passes its encoder's).
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``.
            Defaults to 0.75.
        min_block_patches (int): Smallest block area in patches.
            Defaults to 4.
        max_block_patches (int, optional): Largest block area; None means
            the number of masked patches (BEiT's default). Defaults to None.
        min_aspect (float): Smallest aspect ratio, in ``(0, 1]``; the
            largest is its inverse. Defaults to 0.3.
        num_blocks (int, optional): Blocks drawn per image; None means
            ``2 * ceil(masked / min_block_patches)``. Defaults to None.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 grid_size: Sequence[int],
                 mask_ratio: float = 0.75,
                 min_block_patches: int = 4,
                 max_block_patches: Optional[int] = None,
                 min_aspect: float = 0.3,
                 num_blocks: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.grid_size = check_grid_size(grid_size)
        self.mask_ratio = check_mask_ratio(mask_ratio)
        for name, value in (('min_block_patches', min_block_patches),
                            ('max_block_patches', max_block_patches),
                            ('num_blocks', num_blocks)):
            if value is None and name != 'min_block_patches':
                continue
            if (isinstance(value, bool) or not isinstance(value, int)
                    or value < 1):
                raise ValueError(
                    f'{name} must be a positive int, got {value!r}')
        if (max_block_patches is not None
                and max_block_patches < min_block_patches):
            raise ValueError(
                f'max_block_patches ({max_block_patches}) must be >= '
                f'min_block_patches ({min_block_patches})')
        if (isinstance(min_aspect, bool)
                or not isinstance(min_aspect, (int, float))
                or not 0 < min_aspect <= 1):
            raise ValueError(
                f'min_aspect must be a number in (0, 1], got {min_aspect!r}')
        self.min_block_patches = min_block_patches
        self.max_block_patches = max_block_patches
        self.min_aspect = float(min_aspect)
        self.num_blocks = num_blocks

    @property
    def num_patches(self) -> int:
        """int: ``N = h * w``."""
        return self.grid_size[0] * self.grid_size[1]

    def depth_at(self, progress: float) -> float:
        """Block masks have no depth schedule (and need no tree): 0.

        Args:
            progress (float): Training progress in ``[0, 1]`` (unused).

        Returns:
            float: 0.0.
        """
        return 0.0

    def draw_depths(self, progress: float, batch_size: int,
                    rng: random.Random) -> List[int]:
        """Zeros: no tree is needed, so ``EHMMAE`` skips the teacher.

        Args:
            progress (float): Training progress (unused).
            batch_size (int): ``B``.
            rng (random.Random): Unused.

        Returns:
            List[int]: ``B`` zeros.
        """
        return [0] * batch_size

    def hierarchy(self, affinity: Tensor) -> Hierarchy:
        """The tree of an affinity (``EHMMAE.predict`` evaluates the
        teacher's tree with it), built with the default options.

        Args:
            affinity (Tensor): Patch affinity ``[B, N, N]``.

        Returns:
            Hierarchy: The trees.
        """
        return build_hierarchy(affinity, self.grid_size)

    def _block_count(self, num_mask: int) -> int:
        if self.num_blocks is not None:
            return self.num_blocks
        return 2 * max(1, math.ceil(num_mask / self.min_block_patches))

    def blocks(self,
               batch_size: int,
               device: Optional[torch.device] = None,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw the blocks: each patch's first covering block.

        Args:
            batch_size (int): ``B``.
            device (torch.device, optional): Defaults to None (CPU).
            generator (torch.Generator, optional): Random source.
                Defaults to None.

        Returns:
            Tensor: LongTensor ``[B, N]``, the index of the first block
            covering each patch, ``K`` (the block count) for none.
        """
        h, w = self.grid_size
        num = h * w
        num_mask = num_masked(num, self.mask_ratio)
        blocks = self._block_count(num_mask)
        max_area = (num_mask if self.max_block_patches is None else
                    self.max_block_patches)
        max_area = max(max_area, self.min_block_patches)
        draw = torch.rand(batch_size, blocks, 4, device=device,
                          generator=generator)
        area = self.min_block_patches + draw[..., 0] * (
            max_area - self.min_block_patches)
        log_aspect = math.log(self.min_aspect) * (1 - 2 * draw[..., 1])
        aspect = log_aspect.exp()
        rows = (area * aspect).sqrt().round().clamp(1, h).long()  # [B, K]
        cols = (area / aspect).sqrt().round().clamp(1, w).long()
        top = (draw[..., 2] * (h - rows + 1)).floor().long().clamp(
            max=h - rows)
        left = (draw[..., 3] * (w - cols + 1)).floor().long().clamp(
            max=w - cols)
        patch = torch.arange(num, device=device)
        prow, pcol = (patch // w)[None, None], (patch % w)[None, None]
        covered = ((prow >= top[..., None]) & (prow < (top + rows)[..., None])
                   & (pcol >= left[..., None])
                   & (pcol < (left + cols)[..., None]))  # [B, K, N]
        block_index = torch.arange(blocks, device=device)[None, :, None]
        first = torch.where(covered, block_index,
                            torch.full_like(block_index, blocks))
        return first.amin(dim=1)  # [B, N]

    def _make_masks(self, affinity: Optional[Tensor], batch: int,
                    device: torch.device, progress: Optional[float],
                    depth: Union[int, Sequence[int], Tensor, None],
                    generator: Optional[torch.Generator]) -> MaskingResult:
        """Block masks for ``batch`` images (see :meth:`forward`).

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (ones: the block level), ``hierarchy`` (patches and
            block pieces) and ``node_size`` (the mean size in patches of
            the block pieces the mask covers, :func:`masked_node_size`).
        """
        h, w = self.grid_size
        num = h * w
        if affinity is not None and affinity.dim() == 3 and (
                affinity.shape[1] != num):
            raise ValueError(f'affinity has {affinity.shape[1]} patches, the '
                             f'grid {h}x{w} has {num}')
        num_mask = num_masked(num, self.mask_ratio)
        noise = torch.rand(batch, num, device=device, generator=generator)
        first = self.blocks(batch, device, generator)
        rank = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        order = torch.argsort(first * num + rank, dim=1)  # masked first
        # Block pieces (patches in no block are their own piece).
        patch = torch.arange(num, device=device).expand(batch, num)
        blocks = self._block_count(num_mask)
        pieces = compact_node_ids(
            torch.where(first < blocks, first, blocks + patch), blocks + num)
        ancestors = torch.stack((patch, pieces), dim=1)
        counts = torch.stack(
            (torch.full((batch, ), num, device=device), pieces.amax(1) + 1),
            dim=1)
        hierarchy = Hierarchy(ancestors, counts, (h, w))
        result = _order_to_result(order, num_mask,
                                  torch.ones(batch, dtype=torch.long,
                                             device=device), hierarchy)
        result.node_size = masked_node_size(pieces, result.mask)
        return result

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, mask_ratio={self.mask_ratio}, '
                f'min_block_patches={self.min_block_patches}, '
                f'max_block_patches={self.max_block_patches}, '
                f'min_aspect={self.min_aspect}, num_blocks={self.num_blocks}')


@MODELS.register_module()
class RandomHierarchyMasking(_ContentFreeMasking,
                             EvolvedHierarchicalMasking):
    """EHM's trees and depth schedule on an affinity without image content.

    The affinity handed in is replaced by i.i.d. uniform noise,
    symmetrised, drawn per image from ``generator``; the tree builder
    (:func:`build_hierarchy`), the depth schedule and the node masking are
    exactly :class:`EvolvedHierarchicalMasking`'s. The result: masks of
    whole contiguous random regions whose sizes follow EHM's per-level
    node statistics, at the same exact ratio. All arguments are those of
    :class:`EvolvedHierarchicalMasking`.

    Random draws from ``generator``, in order: ``torch.rand(B, N, N)`` (the
    noise affinity), then those of :class:`EvolvedHierarchicalMasking`.
    """

    def _make_masks(self, affinity: Optional[Tensor], batch: int,
                    device: torch.device, progress: Optional[float],
                    depth: Union[int, Sequence[int], Tensor, None],
                    generator: Optional[torch.Generator]) -> MaskingResult:
        """Random-hierarchy masks for ``batch`` images (see :meth:`forward`).

        Returns:
            MaskingResult: As :class:`EvolvedHierarchicalMasking` returns.
        """
        if (progress is None) == (depth is None):
            raise ValueError('give exactly one of progress and depth')
        num = self.num_patches
        noise = torch.rand(batch, num, num, device=device,
                           generator=generator)
        noise = (noise + noise.transpose(1, 2)) / 2
        return EvolvedHierarchicalMasking.forward(
            self, noise, progress=progress, depth=depth, generator=generator)
