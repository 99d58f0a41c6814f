# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""What a masking is: :class:`MaskSpec`.

A :class:`MaskSpec` holds everything that decides which patches an EHM
mask covers, given a tree and the random draws: the patch grid, the masked
count, the depth schedule (:class:`~.depth_schedule.DepthSchedule`),
what a depth names
(``depth_unit``), which patches of the split node go (``boundary``) and
the tree options (:class:`~.hierarchy.TreeOptions`). It is frozen and
validated once, by reading the values; :func:`~.evolved_masking.cut_masks`
takes it, in the model (``EvolvedHierarchicalMasking``) and in the data
pipeline (``EvolvedHierarchicalMaskGenerator``) alike.
"""
import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import Optional, Sequence, Tuple

from .depth_schedule import DepthSchedule, _is_number
from .hierarchy import (
    TreeOptions,
    check_grid_size,
    default_max_levels,
    min_tree_height,
)

DEPTH_UNITS = ('level', 'node_size')
BOUNDARY_MODES = ('random', 'subtree')


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """How many patches a ratio masks: ``round(mask_ratio * N)``.

    mmpretrain's ``MAEViT.random_masking`` keeps ``int(N * (1 - ratio))``
    instead; the two differ when the fraction of ``N * ratio`` is at most
    ``.5`` (``N = 16``, ratio ``0.9``: MAE keeps 1, here 2) or float error
    moves MAE's product below an integer. Both use the same shuffle.

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
    if not _is_number(mask_ratio) or not 0.0 < mask_ratio < 1.0:
        raise ValueError(
            f'mask_ratio must be a number in (0, 1), got {mask_ratio!r}')
    return float(mask_ratio)


@dataclass(frozen=True)
class MaskSpec:
    """One masking, validated once: everything but the tree and the draws.

    Build it with :meth:`create` (from the config options users write).
    Validation reads the values: the ratio and count, the schedule
    (:class:`DepthSchedule`), the units, and that the schedule fits the
    trees: with ``depth_unit='level'`` every tree over ``N = h * w``
    patches reaches ``min(ceil(log2 N), max_levels)`` levels (at exactly
    ``ceil(log2 N)`` a tree may already be one node, whose "mask" is then
    a random choice of patches); with ``'node_size'`` nodes of ``2**d``
    patches need ``2**d <= N`` and ``d <= max_levels``.

    Args:
        grid_size (Tuple[int, int]): The patch grid ``(h, w)`` (tree
            leaves).
        num_masked (int): Patches masked per image, in ``[0, N]``
            (``round(mask_ratio * N)`` from :meth:`create`).
        schedule (DepthSchedule): The depth as a function of progress.
        depth_unit (str): What a depth names: ``'level'`` (a tree level)
            or ``'node_size'`` (the level whose mean node size is closest
            to ``2**d`` patches). Defaults to 'level'.
        levels_per_octave (float): With ``'node_size'``, tree levels built
            per unit of depth (per doubling of the node size), ``>= 1``.
            Defaults to 3.0.
        boundary (str): Which patches of the one partly masked node per
            image are masked: ``'random'`` ones or ``'subtree'``, in the
            order of the node's own subtree. Defaults to 'random'.
        tree (TreeOptions): Options of the tree builder.
            Defaults to ``TreeOptions()``.
    """

    grid_size: Tuple[int, int]
    num_masked: int
    schedule: DepthSchedule
    depth_unit: str = 'level'
    levels_per_octave: float = 3.0
    boundary: str = 'random'
    tree: TreeOptions = field(default_factory=TreeOptions)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'grid_size', check_grid_size(self.grid_size))
        num, count = self.num_patches, self.num_masked
        if isinstance(count, bool) or not isinstance(count, Integral) or not (
                0 <= count <= num):
            raise ValueError(
                f'the masked count must be in [0, {num}] for the '
                f'{self.grid_size[0]}x{self.grid_size[1]} grid, got '
                f'{count!r}')
        object.__setattr__(self, 'num_masked', int(count))
        if self.depth_unit not in DEPTH_UNITS:
            raise ValueError(f'depth_unit must be one of {DEPTH_UNITS}, '
                             f'got {self.depth_unit!r}')
        octave = self.levels_per_octave
        if not _is_number(octave) or not 1.0 <= octave < math.inf:
            raise ValueError('levels_per_octave must be a finite number >= '
                             f'1, got {octave!r}')
        object.__setattr__(self, 'levels_per_octave', float(octave))
        if self.boundary not in BOUNDARY_MODES:
            raise ValueError(f'boundary must be one of {BOUNDARY_MODES}, '
                             f'got {self.boundary!r}')
        self._check_schedule_fits_the_trees()

    @classmethod
    def create(cls,
               grid_size: Sequence[int],
               mask_ratio: Optional[float] = 0.75,
               d_min: float = 0.,
               d_max: float = 5.,
               schedule: str = 'linear',
               num_steps: Optional[int] = None,
               hierarchy_cfg: Optional[dict] = None,
               depth_unit: str = 'level',
               levels_per_octave: float = 3.0,
               boundary: str = 'random',
               num_masking_patches: Optional[int] = None) -> 'MaskSpec':
        """A spec from the options a config writes.

        Args:
            grid_size (Sequence[int]): The patch grid ``(h, w)``.
            mask_ratio (float, optional): Fraction masked, in ``(0, 1)``;
                ``round(mask_ratio * N)`` patches. Defaults to 0.75.
            d_min, d_max, schedule, num_steps: Of the
                :class:`~.depth_schedule.DepthSchedule`.
            hierarchy_cfg (dict, optional): :class:`TreeOptions` fields.
                Defaults to None.
            depth_unit, levels_per_octave, boundary: As the class's.
            num_masking_patches (int, optional): The masked count instead
                of ``mask_ratio`` (BEiT's convention). Defaults to None.

        Returns:
            MaskSpec: The validated spec.
        """
        grid_size = check_grid_size(grid_size)
        count = num_masking_patches
        if count is None:
            count = num_masked(grid_size[0] * grid_size[1],
                               check_mask_ratio(mask_ratio))
        return cls(grid_size, count,
                   DepthSchedule(d_min, d_max, schedule, num_steps),
                   depth_unit, levels_per_octave, boundary,
                   TreeOptions.from_cfg(hierarchy_cfg))

    @property
    def num_patches(self) -> int:
        """int: ``N = h * w``."""
        return self.grid_size[0] * self.grid_size[1]

    def unit_repr(self) -> str:
        """str: ``depth_unit=..., levels_per_octave=..., boundary=...``."""
        return (f'depth_unit={self.depth_unit!r}, '
                f'levels_per_octave={self.levels_per_octave}, '
                f'boundary={self.boundary!r}')

    def tree_levels(self, depth: int) -> int:
        """Merge levels to build for masks of integer depth ``depth``.

        ``depth`` itself with ``'level'``; ``ceil(levels_per_octave *
        depth)`` with ``'node_size'``; at most the tree's level cap.

        Args:
            depth (int): The deepest integer depth to mask at.

        Returns:
            int: The level count.
        """
        levels = depth
        if self.depth_unit == 'node_size':
            levels = math.ceil(self.levels_per_octave * depth)
        cap = self.tree.max_levels
        return min(levels, default_max_levels(self.num_patches)
                   if cap is None else cap)

    def _check_schedule_fits_the_trees(self) -> None:
        """Refuse a schedule deeper than every tree over the grid reaches."""
        (h, w), num = self.grid_size, self.num_patches
        cap = self.tree.max_levels
        end = self.schedule.deepest_end
        deepest = self.schedule.max_depth
        stated = f'{end}={getattr(self.schedule, end):g} reaches depth ' \
                 f'{deepest}'
        capped = ', hierarchy_cfg.max_levels' if cap is not None else ''
        if self.depth_unit == 'node_size':
            limit = int(math.floor(math.log2(num)))
            limit = limit if cap is None else min(limit, cap)
            if deepest > limit:
                raise ValueError(
                    f"{stated}, i.e. nodes of {2**deepest} patches "
                    f"(depth_unit='node_size'), beyond the limit depth "
                    f'{limit} of a {h}x{w} patch grid (2**d <= {num} patches'
                    + (', d <= hierarchy_cfg.max_levels' if capped else '')
                    + f'); lower {end}')
            return
        height = min_tree_height(num, cap)
        if deepest > height:
            raise ValueError(
                f'{stated}, beyond the height {height} that every tree over '
                f'a {h}x{w} patch grid reaches (ceil(log2 {num}){capped}); '
                f'lower {end}')
