# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The interface every mask source implements, and its result type."""
import random
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import Tensor

from .hierarchy import Hierarchy, check_grid_size
from .mask_spec import check_mask_ratio, num_masked

Depths = Union[int, Sequence[int], Tensor, None]


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
        hierarchy (Hierarchy, optional): The trees the masks come from, as
            deep as the masks needed. Defaults to None.
        nonfinite (Tensor, optional): BoolTensor ``[B]``, the images whose
            affinity was not finite and that got depth-0 masks instead
            (``nonfinite='random'``). Defaults to None.
        node_size (Tensor, optional): float ``[B]``, the mean size in
            patches of the nodes each image's mask covers, wholly or (the
            boundary node) partly. Defaults to None.
    """

    mask: Tensor
    ids_restore: Tensor
    ids_keep: Tensor
    depth: Tensor
    hierarchy: Optional[Hierarchy] = None
    nonfinite: Optional[Tensor] = None
    node_size: Optional[Tensor] = None


def split_shuffle(ids_shuffle: Tensor,
                  num_mask: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Masks from a patch order whose visible patches come first.

    Args:
        ids_shuffle (Tensor): LongTensor ``[B, N]``, a permutation per
            image; its last ``num_mask`` patches are masked.
        num_mask (int): Patches masked per image.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: ``mask`` float ``[B, N]`` (1 =
        masked), ``ids_restore`` ``[B, N]`` and ``ids_keep``
        ``[B, N - num_mask]``, as :class:`MaskingResult` holds them.
    """
    batch, num = ids_shuffle.shape
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    num_keep = num - num_mask
    mask = torch.ones(batch, num, device=ids_shuffle.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # [B, N]
    return mask, ids_restore, ids_shuffle[:, :num_keep]


def _all_zero(depth: Depths) -> bool:
    return isinstance(depth, (list, tuple)) and all(d == 0 for d in depth)


class MaskSource(BaseModule, metaclass=ABCMeta):
    """A mask generator for ``EHMMAE`` / ``EHMSimMIM``: the one interface.

    Every mask source (EHM, block, random tree, pixel tree, ...) is a
    registered subclass. What a new source implements:

    1. ``__init__(grid_size, mask_ratio=..., <its options>, init_cfg=None)``
       calling ``super().__init__(grid_size, mask_ratio, init_cfg)``, which
       validates both and sets :attr:`grid_size`, :attr:`mask_ratio` and
       :attr:`num_masked`; validate the other options there (reading
       values), so a bad config fails when the model is built;
    2. the class attribute :attr:`requires_affinity`: True when the masks
       are cut from the patch affinity handed in (the teacher's attention
       or the pixel cues); False makes the model skip computing one, and
       ``forward`` then gets ``affinity=None``;
    3. :meth:`make_masks`: the masks of a batch as a :class:`MaskingResult`
       (``split_shuffle`` turns a patch order into one); exactly
       :attr:`num_masked` patches per image, static shapes, no host read;
    4. :meth:`hierarchy`: the tree the masks are cut from, every level
       (``HierarchyIoU`` scores it through the model's ``predict``); a
       source without a tree returns :meth:`Hierarchy.leaves`;
    5. optionally :meth:`draw_depths`, when the masks evolve with training
       progress (the default draws depth 0 for every image);
    6. the class attribute :attr:`masks_own_image_tree`: False when an
       image's masks come from a tree that is not the model's tree of that
       image (another image's, as ``ShuffledAffinityMasking`` does); the
       model's ``predict`` then also writes the image's own tree, labelled
       ``teacher_hierarchy_ancestors``, as it does for sources that need no
       affinity.

    :meth:`forward` is the same for all: it finds the batch size and device
    and calls :meth:`make_masks`. The model draws the per-image depths on
    the host with :meth:`draw_depths` from its seeded ``random.Random``
    and calls ``forward(affinity, depth=..., generator=...)`` with a
    generator seeded for the iteration; all draws must come from that
    generator, so that a resumed run draws the same masks.

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` the masks live
            on (the model fills it in).
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``;
            ``round(mask_ratio * N)`` patches. Defaults to 0.75.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    #: Whether the masks are cut from the affinity ``forward`` is given.
    requires_affinity: bool = True
    #: Whether image i's masks are cut from image i's own tree.
    masks_own_image_tree: bool = True

    def __init__(self,
                 grid_size: Sequence[int],
                 mask_ratio: float = 0.75,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.grid_size = check_grid_size(grid_size)
        self.mask_ratio = check_mask_ratio(mask_ratio)

    @property
    def num_patches(self) -> int:
        """int: ``N = h * w``."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_masked(self) -> int:
        """int: Patches masked per image, ``round(mask_ratio * N)``."""
        return num_masked(self.num_patches, self.mask_ratio)

    def depth_at(self, progress: float) -> float:
        """The continuous masking depth at ``progress`` (0: no schedule).

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        return 0.0

    def draw_depths(self, progress: float, batch_size: int,
                    rng: random.Random) -> List[int]:
        """Each image's integer depth at ``progress``, drawn on the host.

        Args:
            progress (float): Training progress in ``[0, 1]``.
            batch_size (int): ``B``.
            rng (random.Random): Random source.

        Returns:
            List[int]: ``B`` depths, to pass as ``depth``; zeros here.
        """
        return [0] * batch_size

    def forward(self,
                affinity: Optional[Tensor] = None,
                progress: Optional[float] = None,
                depth: Depths = None,
                generator: Optional[torch.Generator] = None,
                batch_size: Optional[int] = None) -> MaskingResult:
        """Make masks for a batch.

        Args:
            affinity (Tensor, optional): Patch affinity ``[B, N, N]`` over
                :attr:`grid_size`. None when the source does not require
                one, or every depth is 0 (a list of zeros). Defaults to
                None.
            progress (float, optional): Training progress in ``[0, 1]``.
                Defaults to None.
            depth (int | Sequence[int] | Tensor, optional): Per-image depths
                instead of ``progress``: one int, a list of ``B`` ints
                (e.g. from :meth:`draw_depths`) or a LongTensor ``[B]``.
                Defaults to None.
            generator (torch.Generator, optional): Random source (and,
                without an affinity, the device); None uses the global one.
                Defaults to None.
            batch_size (int, optional): ``B`` when neither ``affinity`` nor
                a depth list gives it. Defaults to None.

        Returns:
            MaskingResult: :meth:`make_masks`'s masks.
        """
        if isinstance(progress, (tuple, list)):
            raise TypeError(
                f'{type(self).__name__} takes its grid_size at build now; '
                'call it as masking(affinity, progress=...) or '
                'masking(affinity, depth=...)')
        if (affinity is None and self.requires_affinity
                and not _all_zero(depth)):
            raise ValueError('affinity may only be None with depth a list of '
                             'zeros (MAE random masks)')
        batch, device = self.batch_and_device(affinity, depth, batch_size,
                                              generator)
        return self.make_masks(affinity, batch, device, progress, depth,
                               generator)

    @staticmethod
    def batch_and_device(affinity: Optional[Tensor], depth: Depths,
                         batch_size: Optional[int],
                         generator: Optional[torch.Generator]
                         ) -> Tuple[int, torch.device]:
        """Batch size and device of a call.

        Args:
            affinity (Tensor, optional): Any tensor ``[B, ...]``.
            depth: The ``depth`` argument; a list gives ``B``.
            batch_size (int, optional): ``B`` otherwise.
            generator (torch.Generator, optional): Its device is used
                without an affinity (CPU when None).

        Returns:
            Tuple[int, torch.device]: ``(B, device)``.
        """
        if affinity is not None:
            if not isinstance(affinity, Tensor) or affinity.dim() < 1:
                raise ValueError('affinity must be a tensor [B, ...] or '
                                 f'None, got {type(affinity).__name__}')
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
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError('without an affinity the batch size comes from '
                             'a depth list or batch_size, a positive int; '
                             f'got {batch!r}')
        if batch_size is not None and batch_size != batch:
            raise ValueError(f'batch_size {batch_size} differs from the batch '
                             f'{batch} of the affinity / depth')
        return batch, device

    @abstractmethod
    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Depths,
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """The masks of ``batch`` images (see :meth:`forward`).

        Args:
            affinity (Tensor, optional): As :meth:`forward` got it.
            batch (int): ``B``.
            device (torch.device): Where the masks go.
            progress (float, optional): As :meth:`forward` got it.
            depth (int | Sequence[int] | Tensor, optional): Likewise.
            generator (torch.Generator, optional): Likewise.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` and, where the source has them, ``hierarchy``,
            ``nonfinite`` and ``node_size``.
        """

    @abstractmethod
    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """The whole tree the masks are cut from, e.g. to show or score it.

        Args:
            affinity (Tensor, optional): Patch affinity ``[B, N, N]`` (a
                source that requires one). Defaults to None.
            batch_size (int, optional): ``B`` without an affinity.
                Defaults to None.
            generator (torch.Generator, optional): The random source, for a
                source whose tree is drawn: with the state ``forward`` got,
                the tree of those masks. Defaults to None.

        Returns:
            Hierarchy: Every level of the trees.
        """
