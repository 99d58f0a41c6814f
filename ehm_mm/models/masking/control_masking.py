# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Control mask generators for the masking study.

Two :class:`~.mask_source.MaskSource` modules, so ``EHMMAE`` and
``EHMSimMIM`` train with them unchanged, and neither reads the image:

* :class:`BlockwiseMasking`: BEiT / SimMIM-style random rectangles of
  patches at the same exact ratio (the paper's "block" masks);
* :class:`RandomHierarchyMasking`: EHM's own tree builder and depth schedule
  on a random affinity, i.e. contiguous random regions with no image
  content (the control for "is it the attention-derived hierarchy or any
  contiguous chunks?"). A tree level of a noise tree holds larger nodes
  than the same level of a teacher's tree (masking study, issue 22): the
  node sizes match EHM's only with ``depth_unit='node_size'``.

Both set ``requires_affinity = False`` (the model then skips the teacher's
attention for the masks): an affinity handed in is read only for its batch
size and device. Their :meth:`hierarchy` is the tree their masks are cut
from (block pieces, the random tree), drawn from the generator.
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from mmpretrain.registry import MODELS
from torch import Tensor

from .evolved_masking import EvolvedHierarchicalMasking, masked_node_size
from .hierarchy import Hierarchy
from .mask_source import MaskingResult, MaskSource, split_shuffle


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


#: BEiT's block areas on its 14 x 14 grid (196 patches): at least
#: ``min_num_patches=16``, at most its masked count, 75 (``max_num_patches``
#: None).
BEIT_BLOCK_PATCHES = (16, 75)
BEIT_NUM_PATCHES = 196
SIZE_RANGES = (None, 'beit')


def beit_block_patches(grid_size: Sequence[int]) -> Tuple[int, int]:
    """BEiT's block area range scaled to a grid by its patch count.

    The same fractions of the grid as BEiT's 16 and 75 of 196 patches:
    ``round(a * N / 196)`` (at least 1); on an 8 x 8 grid 5 and 24.

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tuple[int, int]: ``(min_block_patches, max_block_patches)``.
    """
    num = grid_size[0] * grid_size[1]
    low, high = (max(1, round(area * num / BEIT_NUM_PATCHES))
                 for area in BEIT_BLOCK_PATCHES)
    return low, high


@MODELS.register_module()
class BlockwiseMasking(MaskSource):
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
    random single patches (with the default ``num_blocks`` only on tiny
    grids).

    Vectorised over the batch, static shapes. The tree (:meth:`hierarchy`,
    ``MaskingResult.hierarchy``) has two levels: the patches and the block
    pieces (a block minus earlier blocks; patches in no block are their
    own pieces); ``depth`` is 1 for every image.

    Random draws from ``generator``, in order: ``torch.rand(B, N)`` (order
    inside blocks), then ``torch.rand(B, K, 4)`` (area, aspect, row,
    column).

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` (the model
            fills it in).
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
        size_range (str, optional): ``'beit'`` sets ``min_block_patches``
            and ``max_block_patches`` to BEiT's block areas scaled to the
            grid (:func:`beit_block_patches`; leave those two at their
            defaults then). None uses them as given. Defaults to None.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    requires_affinity = False

    def __init__(self,
                 grid_size: Sequence[int],
                 mask_ratio: float = 0.75,
                 min_block_patches: int = 4,
                 max_block_patches: Optional[int] = None,
                 min_aspect: float = 0.3,
                 num_blocks: Optional[int] = None,
                 size_range: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(grid_size, mask_ratio, init_cfg)
        if size_range not in SIZE_RANGES:
            raise ValueError(f'size_range must be one of {SIZE_RANGES}, '
                             f'got {size_range!r}')
        if size_range == 'beit':
            if min_block_patches != 4 or max_block_patches is not None:
                raise ValueError(
                    "size_range='beit' sets min_block_patches and "
                    'max_block_patches; leave them at their defaults, got '
                    f'{min_block_patches!r} and {max_block_patches!r}')
            min_block_patches, max_block_patches = beit_block_patches(
                self.grid_size)
        self.size_range = size_range
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

    def _block_count(self, num_mask: int) -> int:
        """Blocks drawn per image when ``num_mask`` patches are masked."""
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
        top, left, rows, cols = self.rectangles(batch_size, device,
                                                generator)
        blocks = rows.shape[1]
        patch = torch.arange(h * w, device=device)
        prow, pcol = (patch // w)[None, None], (patch % w)[None, None]
        covered = ((prow >= top[..., None]) & (prow < (top + rows)[..., None])
                   & (pcol >= left[..., None])
                   & (pcol < (left + cols)[..., None]))  # [B, K, N]
        block_index = torch.arange(blocks, device=device)[None, :, None]
        first = torch.where(covered, block_index,
                            torch.full_like(block_index, blocks))
        return first.amin(dim=1)  # [B, N]

    def rectangles(self,
                   batch_size: int,
                   device: Optional[torch.device] = None,
                   generator: Optional[torch.Generator] = None
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Draw the rectangles of :meth:`blocks` (its one random draw).

        Arguments as :meth:`blocks`.

        Returns:
            Tuple[Tensor, Tensor, Tensor, Tensor]: LongTensors ``[B, K]``:
            top row, left column, rows and columns of every block.
        """
        h, w = self.grid_size
        blocks = self._block_count(self.num_masked)
        max_area = (self.num_masked if self.max_block_patches is None else
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
        return top, left, rows, cols

    def _draw(self, batch: int, device: torch.device,
              generator: Optional[torch.Generator]
              ) -> Tuple[Tensor, Tensor, Hierarchy]:
        """The patch values, first blocks and the two-level block tree."""
        num = self.num_patches
        noise = torch.rand(batch, num, device=device, generator=generator)
        first = self.blocks(batch, device, generator)
        # Block pieces (patches in no block are their own piece).
        patch = torch.arange(num, device=device).expand(batch, num)
        blocks = self._block_count(self.num_masked)
        pieces = compact_node_ids(
            torch.where(first < blocks, first, blocks + patch), blocks + num)
        counts = torch.stack(
            (torch.full((batch, ), num, device=device), pieces.amax(1) + 1),
            dim=1)
        tree = Hierarchy(torch.stack((patch, pieces), dim=1), counts,
                         self.grid_size)
        return noise, first, tree

    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """The block tree (patches, block pieces) the masks are cut from.

        The draws of :meth:`forward`: with the generator state it got, the
        pieces of its masks (arguments as :meth:`MaskSource.hierarchy`;
        an affinity gives only the batch size and device).

        Returns:
            Hierarchy: Two levels, ``[B, 2, N]``.
        """
        batch, device = self.batch_and_device(affinity, None, batch_size,
                                              generator)
        return self._draw(batch, device, generator)[2]

    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Union[int, Sequence[int], Tensor, None],
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """Block masks for ``batch`` images (progress and depth unused).

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (ones: the block level), ``hierarchy`` (patches and
            block pieces) and ``node_size`` (the mean size in patches of
            the block pieces the mask covers, :func:`masked_node_size`).
        """
        num = self.num_patches
        if affinity is not None and affinity.dim() == 3 and (
                affinity.shape[1] != num):
            h, w = self.grid_size
            raise ValueError(f'affinity has {affinity.shape[1]} patches, the '
                             f'grid {h}x{w} has {num}')
        noise, first, tree = self._draw(batch, device, generator)
        rank = torch.argsort(torch.argsort(noise, dim=1), dim=1)
        masked_first = torch.argsort(first * num + rank, dim=1)
        mask, ids_restore, ids_keep = split_shuffle(masked_first.flip(1),
                                                    self.num_masked)
        ones = torch.ones(batch, dtype=torch.long, device=device)
        return MaskingResult(mask, ids_restore, ids_keep, ones, tree,
                             node_size=masked_node_size(tree.ancestors[:, 1],
                                                        mask))

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, mask_ratio={self.mask_ratio}, '
                f'min_block_patches={self.min_block_patches}, '
                f'max_block_patches={self.max_block_patches}, '
                f'min_aspect={self.min_aspect}, num_blocks={self.num_blocks}, '
                f'size_range={self.size_range!r}')


@MODELS.register_module()
class RandomHierarchyMasking(EvolvedHierarchicalMasking):
    """EHM's trees and depth schedule on an affinity without image content.

    The affinity handed in is replaced by i.i.d. uniform noise,
    symmetrised, drawn per image from ``generator``; the tree builder, the
    depth schedule and the node masking are exactly
    :class:`EvolvedHierarchicalMasking`'s. The result: masks of whole
    contiguous random regions at the same exact ratio, of the noise tree's
    node sizes (size-matched to EHM's with ``depth_unit='node_size'``).
    All arguments are those of :class:`EvolvedHierarchicalMasking`.

    Random draws from ``generator``, in order: ``torch.rand(B, N, N)`` (the
    noise affinity), then those of :class:`EvolvedHierarchicalMasking`.
    """

    requires_affinity = False

    def _noise_affinity(self, batch: int, device: torch.device,
                        generator: Optional[torch.Generator]) -> Tensor:
        """The random affinity ``[B, N, N]``, symmetric."""
        num = self.num_patches
        noise = torch.rand(batch, num, num, device=device,
                           generator=generator)
        return (noise + noise.transpose(1, 2)) / 2

    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """The whole random tree the masks are cut from.

        The draws of :meth:`forward`: with the generator state it got, the
        tree of its masks, every level (arguments as
        :meth:`MaskSource.hierarchy`; an affinity gives only the batch size
        and device).

        Returns:
            Hierarchy: The trees.
        """
        batch, device = self.batch_and_device(affinity, None, batch_size,
                                              generator)
        return super().hierarchy(
            self._noise_affinity(batch, device, generator))

    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Union[int, Sequence[int], Tensor, None],
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """Random-tree masks for ``batch`` images (see :meth:`forward`).

        Returns:
            MaskingResult: As :class:`EvolvedHierarchicalMasking` returns.
        """
        if (progress is None) == (depth is None):
            raise ValueError('give exactly one of progress and depth')
        return super().make_masks(
            self._noise_affinity(batch, device, generator), batch, device,
            progress, depth, generator)
