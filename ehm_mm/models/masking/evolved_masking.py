# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The registered EHM mask generator (hierarchy + evolved depth + masks)."""
import logging
from typing import Optional, Sequence, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from .depth_schedule import DepthSchedule, stochastic_round
from .hierarchy import (
    build_hierarchy,
    check_affinity,
    check_grid_size,
    min_tree_height,
    nonfinite_images,
)
from .node_masking import MaskingResult, check_mask_ratio, mask_nodes

_HIERARCHY_OPTIONS = ('rounds', 'tolerance', 'max_levels', 'compact')
_NONFINITE_MODES = ('error', 'random')


@MODELS.register_module()
class EvolvedHierarchicalMasking(BaseModule):
    """Evolved Hierarchical Masking: masks cut from per-image patch trees.

    For a batch of patch affinities (e.g. from
    :func:`~ehm_mm.models.masking.attention_affinity` of a teacher ViT) it
    builds one binary tree per image (:func:`build_hierarchy`), picks each
    image's masking depth from the training progress (:class:`DepthSchedule`
    and per-image stochastic rounding) and masks whole nodes of that depth in
    random order (:func:`mask_nodes`), ``round(mask_ratio * N)`` patches per
    image. Depth 0 is MAE random masking. The module has no weights.

    Random draws, in order: one ``torch.rand(B, N)`` for the patch values
    (the same draw as ``MAEViT.random_masking``), then ``torch.rand(B)``
    for the depth rounding, only when ``d(t)`` is not an integer.

    Args:
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``.
            Defaults to 0.75.
        d_min (float): Masking depth at the start of training.
            Defaults to 0.
        d_max (float): Masking depth at the end of training.
            Defaults to 5.
        schedule (str): How the depth moves from ``d_min`` to ``d_max``:
            ``'linear'``, ``'cosine'``, ``'sqrt'``, ``'step'`` or
            ``'constant'`` (see :class:`DepthSchedule`). Defaults to
            'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule.
            Defaults to None.
        hierarchy_cfg (dict, optional): Keyword options of
            :func:`build_hierarchy`: ``rounds``, ``tolerance``,
            ``max_levels``, ``compact``. Defaults to None (its defaults).
        nonfinite (str): What to do with an image whose affinity holds NaN
            or inf: ``'error'`` raises ValueError; ``'random'`` logs a
            warning and gives that image a depth-0 (MAE random) mask.
            Defaults to 'error'.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 mask_ratio: float = 0.75,
                 d_min: float = 0.,
                 d_max: float = 5.,
                 schedule: str = 'linear',
                 num_steps: Optional[int] = None,
                 hierarchy_cfg: Optional[dict] = None,
                 nonfinite: str = 'error',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.mask_ratio = check_mask_ratio(mask_ratio)
        self.depth_schedule = DepthSchedule(d_min, d_max, schedule,
                                            num_steps)
        hierarchy_cfg = dict(hierarchy_cfg or {})
        unknown = sorted(set(hierarchy_cfg) - set(_HIERARCHY_OPTIONS))
        if unknown:
            raise ValueError(f'hierarchy_cfg has unknown keys {unknown}; '
                             f'allowed: {list(_HIERARCHY_OPTIONS)}')
        # Fail at build time on bad options: run them on a 2 x 2 grid.
        build_hierarchy(torch.eye(4)[None], (2, 2), **hierarchy_cfg)
        self.hierarchy_cfg = hierarchy_cfg
        if nonfinite not in _NONFINITE_MODES:
            raise ValueError(f'nonfinite must be one of {_NONFINITE_MODES}, '
                             f'got {nonfinite!r}')
        self.nonfinite = nonfinite

    def depth_at(self, progress: float) -> float:
        """The continuous masking depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        return self.depth_schedule(progress)

    def check_num_levels(self, grid_size: Sequence[int]) -> int:
        """Check that the depth schedule fits the trees of a patch grid.

        Every tree over ``N = h * w`` patches reaches at least
        ``min(ceil(log2 N), max_levels)`` levels, so a schedule whose
        deepest integer depth is beyond that is refused. (At exactly
        ``ceil(log2 N)`` a tree may already be one node, whose "mask" is
        then a random choice of patches; ``ceil(log2 N) - 1`` always has
        two nodes or more.)

        Args:
            grid_size (Sequence[int]): The patch grid ``(h, w)``.

        Returns:
            int: The guaranteed tree height for the grid.
        """
        h, w = check_grid_size(grid_size)
        height = min_tree_height(h * w, self.hierarchy_cfg.get('max_levels'))
        deepest = self.depth_schedule.max_depth
        if deepest > height:
            field = ('d_min' if self.depth_schedule.d_min
                     > self.depth_schedule.d_max
                     and self.depth_schedule.schedule != 'constant' else
                     'd_max')
            raise ValueError(
                f'{field}={getattr(self.depth_schedule, field):g} reaches '
                f'depth {deepest}, beyond the tree height {height} that a '
                f'{h}x{w} patch grid guarantees (ceil(log2 {h * w})'
                + (', hierarchy_cfg.max_levels' if 'max_levels' in
                   self.hierarchy_cfg else '') + f'); lower {field}')
        return height

    def forward(self,
                affinity: Tensor,
                grid_size: Sequence[int],
                progress: Optional[float] = None,
                depth: Union[int, Tensor, None] = None,
                generator: Optional[torch.Generator] = None
                ) -> MaskingResult:
        """Make masks for a batch.

        Args:
            affinity (Tensor): Patch affinity ``[B, N, N]`` (any float
                dtype; used in float32, no gradient).
            grid_size (Sequence[int]): The patch grid ``(h, w)``,
                ``h * w == N``.
            progress (float, optional): Training progress in ``[0, 1]``;
                the depth is ``d(progress)``, stochastically rounded per
                image. Defaults to None.
            depth (int | Tensor, optional): Use this depth instead (an int
                or a LongTensor ``[B]``); exactly one of ``progress`` and
                ``depth`` must be given. Defaults to None.
            generator (torch.Generator, optional): Random source; None uses
                the global one. Defaults to None.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (clamped to each tree's height) and ``hierarchy``.
        """
        h, w = check_affinity(affinity, grid_size)
        if (progress is None) == (depth is None):
            raise ValueError('give exactly one of progress and depth')
        batch, num = affinity.shape[:2]
        device = affinity.device
        bad = None
        if self.nonfinite == 'random':
            bad = nonfinite_images(affinity)
            if bool(bad.any()):
                print_log(
                    f'EvolvedHierarchicalMasking: NaN/inf affinity for '
                    f'{int(bad.sum())} of {batch} images; they get random '
                    '(depth 0) masks.',
                    logger='current',
                    level=logging.WARNING)
                affinity = affinity.masked_fill(bad[:, None, None], 0)
            else:
                bad = None
        hierarchy = build_hierarchy(affinity, (h, w), **self.hierarchy_cfg)
        # The patch values are the first draw, as in MAEViT.random_masking.
        noise = torch.rand(batch, num, device=device, generator=generator)
        if depth is None:
            depth = stochastic_round(
                self.depth_at(progress), batch, device, generator)
        else:
            depth = self._as_depth(depth, batch, device)
        depth = torch.minimum(depth, hierarchy.heights)
        if bad is not None:
            depth = depth.masked_fill(bad, 0)
        nodes = hierarchy.ancestors.gather(
            1, depth[:, None, None].expand(batch, 1, num)).squeeze(1)
        mask, ids_restore, ids_keep = mask_nodes(
            nodes, self.mask_ratio, noise=noise)
        return MaskingResult(mask, ids_restore, ids_keep, depth, hierarchy)

    @staticmethod
    def _as_depth(depth: Union[int, Tensor], batch: int,
                  device: torch.device) -> Tensor:
        """Validate a depth override and broadcast it to ``[B]``.

        Args:
            depth (int | Tensor): An int or LongTensor ``[B]``, ``>= 0``.
            batch (int): ``B``.
            device (torch.device): The affinity's device.

        Returns:
            Tensor: LongTensor ``[B]``.
        """
        if isinstance(depth, Tensor):
            if depth.dtype != torch.long or depth.shape != (batch, ):
                raise ValueError(f'depth must be a LongTensor [{batch}], got'
                                 f' {depth.dtype} {list(depth.shape)}')
            if bool((depth < 0).any()):
                raise ValueError('depth must be >= 0')
            return depth.to(device)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f'depth must be an int >= 0, got {depth!r}')
        return torch.full((batch, ), depth, dtype=torch.long, device=device)

    def extra_repr(self) -> str:
        return (f'mask_ratio={self.mask_ratio}, '
                f'depth_schedule={self.depth_schedule!r}, '
                f'hierarchy_cfg={self.hierarchy_cfg}, '
                f'nonfinite={self.nonfinite!r}')
