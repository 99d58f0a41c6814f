# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Shuffled attention: EHM's masks cut from another image's tree.

The masking study's control for "does the tree's *content* matter?": the
trees have exactly the statistics of EHM's trees (they are EHM's trees of
the same batch), but each image is masked with the tree of a different
image. Everything else (depth schedule, ``depth_unit``, boundary, tree
options) is :class:`~.evolved_masking.EvolvedHierarchicalMasking`'s.
"""
from typing import Optional, Sequence, Union

import torch
from mmpretrain.registry import MODELS
from torch import Tensor

from .evolved_masking import EvolvedHierarchicalMasking
from .hierarchy import Hierarchy
from .mask_source import MaskingResult


def roll_batch(affinity: Tensor) -> Tensor:
    """Hand image ``i`` the affinity of image ``(i + 1) mod B``.

    The cyclic shift by one is a derangement for every ``B >= 2`` (no image
    keeps its own affinity) and is fixed, so a run's masks stay
    reproducible; it needs no random draw and no host read.

    Args:
        affinity (Tensor): ``[B, N, N]``, ``B >= 2``.

    Returns:
        Tensor: ``[B, N, N]``, row ``i`` is ``affinity[(i + 1) % B]``.
    """
    return torch.roll(affinity, shifts=-1, dims=0)


@MODELS.register_module()
class ShuffledAffinityMasking(EvolvedHierarchicalMasking):
    """EHM masks from the affinity of another image of the batch.

    Image ``i`` is masked exactly as :class:`EvolvedHierarchicalMasking`
    masks image ``(i + 1) mod B`` when handed the rolled affinity
    (:func:`roll_batch`): same trees, same depths, same draws from the
    generator, only the tree belongs to the wrong image. So the tree
    statistics (node sizes per level, the level chosen with
    ``depth_unit='node_size'``) are EHM's on the same batch, permuted, and
    whatever EHM gains over this source comes from the tree's fit to the
    image it masks. :meth:`hierarchy` is the tree that made the masks, the
    other image's. An image whose *donor's* affinity is not finite gets
    depth-0 masks (``nonfinite='random'`` flags it).

    A batch of one image has no other image: :meth:`forward` and
    :meth:`hierarchy` refuse it with a ValueError (drop the last
    incomplete batch, ``drop_last=True``, when the dataset size leaves one).

    All arguments are those of :class:`EvolvedHierarchicalMasking`.
    """

    masks_own_image_tree = False

    def _check_batch(self, batch: int) -> None:
        """Refuse a batch without another image to take the tree of."""
        if batch < 2:
            raise ValueError(
                f'{type(self).__name__} masks each image with the tree of '
                f'another image of the batch and needs a batch of at least '
                f'2 images, got {batch} (set drop_last=True on the '
                'dataloader if its last batch can hold one image)')

    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """The trees the masks are cut from: image ``i + 1``'s for image ``i``.

        Args:
            affinity (Tensor): Patch affinity ``[B, N, N]``, ``B >= 2``.
            batch_size (int, optional): Unused. Defaults to None.
            generator (torch.Generator, optional): Source of the jitter
                seeds (``tie_jitter > 0``). Defaults to None.

        Returns:
            Hierarchy: The trees of the rolled affinity.
        """
        if isinstance(affinity, Tensor) and affinity.dim() >= 1:
            self._check_batch(affinity.shape[0])
            affinity = roll_batch(affinity)
        return super().hierarchy(affinity, batch_size, generator)

    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Union[int, Sequence[int], Tensor, None],
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """EHM's masks of the rolled affinity (see :meth:`forward`).

        Returns:
            MaskingResult: As :class:`EvolvedHierarchicalMasking` returns
            for :func:`roll_batch` of ``affinity``; ``hierarchy`` holds the
            trees that made the masks.
        """
        self._check_batch(batch)
        if affinity is not None:
            affinity = roll_batch(affinity)
        return super().make_masks(affinity, batch, device, progress, depth,
                                  generator)
