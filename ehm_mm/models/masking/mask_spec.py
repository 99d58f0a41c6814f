# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""What a masking is: the depth schedule and :class:`MaskSpec`.

A :class:`MaskSpec` holds everything that decides which patches an EHM
mask covers, given a tree and the random draws: the patch grid, the masked
count, the depth schedule (:class:`DepthSchedule`), what a depth names
(``depth_unit``), which patches of the split node go (``boundary``) and
the tree options (:class:`~.hierarchy.TreeOptions`). It is frozen and
validated once, by reading the values; :func:`~.evolved_masking.cut_masks`
takes it, in the model (``EvolvedHierarchicalMasking``) and in the data
pipeline (``EvolvedHierarchicalMaskGenerator``) alike.
"""
import math
import random
from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .hierarchy import (
    TreeOptions,
    check_grid_size,
    default_max_levels,
    min_tree_height,
)

SCHEDULES = ('linear', 'cosine', 'sqrt', 'step', 'constant')
DEPTH_UNITS = ('level', 'node_size')
BOUNDARY_MODES = ('random', 'subtree')

_SHAPES: Dict[str, Callable[[float, int], float]] = dict(
    linear=lambda t, steps: t,
    cosine=lambda t, steps: (1.0 - math.cos(math.pi * t)) / 2.0,
    sqrt=lambda t, steps: math.sqrt(t),
    step=lambda t, steps: min(math.floor(t * steps), steps - 1) / (steps - 1),
    constant=lambda t, steps: 1.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DepthSchedule:
    """Masking depth as a function of training progress.

    ``d(t) = d_min + (d_max - d_min) * s(t)`` with ``s`` one of

    * ``'linear'``: ``s(t) = t``;
    * ``'cosine'``: ``s(t) = (1 - cos(pi t)) / 2``, slow at both ends;
    * ``'sqrt'``: ``s(t) = sqrt(t)``, deep early;
    * ``'step'``: ``num_steps`` equal stages, ``s`` goes from 0 to 1 in
      equal jumps (stage ``k`` of ``n`` has ``s = k / (n - 1)``);
    * ``'constant'``: ``s(t) = 1``, i.e. always ``d_max`` (``d_min`` is
      unused).

    All of them are monotone and all but ``'constant'`` give
    ``d(0) = d_min`` and ``d(1) = d_max`` exactly. ``d_min > d_max`` gives
    a decreasing schedule.

    Args:
        d_min (float): Depth at the start of training (0 = patches, i.e.
            MAE random masking). Defaults to 0.
        d_max (float): Depth at the end of training. Defaults to 5.
        schedule (str): One of :data:`SCHEDULES`. Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule; None
            means one stage per integer depth,
            ``max(2, ceil(|d_max - d_min|) + 1)``. Defaults to None.
    """

    d_min: float = 0.
    d_max: float = 5.
    schedule: str = 'linear'
    num_steps: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ('d_min', 'd_max'):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ValueError(
                    f'{name} must be a finite number >= 0, got {value!r}')
            object.__setattr__(self, name, float(value))
        if self.schedule not in _SHAPES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, '
                             f'got {self.schedule!r}')
        steps = self.num_steps
        if steps is None:
            steps = max(2, math.ceil(abs(self.d_max - self.d_min)) + 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f'num_steps must be an int >= 2, got {steps!r}')
        object.__setattr__(self, 'num_steps', steps)

    @property
    def max_depth(self) -> int:
        """int: The deepest integer depth stochastic rounding can draw."""
        if self.schedule == 'constant':
            return math.ceil(self.d_max)
        return math.ceil(max(self.d_min, self.d_max))

    @property
    def deepest_end(self) -> str:
        """str: ``'d_min'`` or ``'d_max'``, whichever reaches max_depth."""
        return ('d_min' if self.d_min > self.d_max
                and self.schedule != 'constant' else 'd_max')

    def __call__(self, progress: float) -> float:
        """Return the continuous depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        if not _is_number(progress) or not 0.0 <= progress <= 1.0:
            raise ValueError(
                f'progress must be a number in [0, 1], got {progress!r}')
        shape = _SHAPES[self.schedule](float(progress), self.num_steps)
        if shape == 1.0:  # exact end point, no rounding error
            return self.d_max
        return self.d_min + (self.d_max - self.d_min) * shape


def _check_depth(depth: float) -> Tuple[int, float]:
    if not math.isfinite(depth) or depth < 0:
        raise ValueError(f'depth must be finite and >= 0, got {depth!r}')
    base = math.floor(depth)
    return base, depth - base


def stochastic_round(depth: float,
                     batch_size: int,
                     device: Optional[torch.device] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Round a continuous depth to an integer per image, unbiased.

    Image ``b`` gets ``floor(d) + 1`` with probability ``d - floor(d)``,
    else ``floor(d)``, so the batch mean estimates ``d``. An integer ``d``
    draws no random numbers.

    Args:
        depth (float): The continuous depth ``d >= 0``.
        batch_size (int): Number of images ``B``.
        device (torch.device, optional): Where to put the result.
            Defaults to None.
        generator (torch.Generator, optional): Random source; None uses the
            global one. Defaults to None.

    Returns:
        Tensor: LongTensor ``[B]``.
    """
    base, frac = _check_depth(depth)
    out = torch.full((batch_size, ), base, dtype=torch.long, device=device)
    if frac > 0:
        draw = torch.rand(batch_size, device=device, generator=generator)
        out += (draw < frac).long()
    return out


def stochastic_round_host(depth: float, batch_size: int,
                          rng: random.Random) -> List[int]:
    """:func:`stochastic_round` on the host, from a Python random source.

    The depths are known to Python without reading a device, so a caller
    can build only the levels they use, or skip the tree when all are 0.

    Args:
        depth (float): The continuous depth ``d >= 0``.
        batch_size (int): Number of images ``B``.
        rng (random.Random): Random source (``B`` draws unless ``d`` is an
            integer).

    Returns:
        List[int]: ``B`` depths.
    """
    base, frac = _check_depth(depth)
    if frac == 0:
        return [base] * batch_size
    return [base + (rng.random() < frac) for _ in range(batch_size)]


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """How many patches a ratio masks: ``round(mask_ratio * N)``.

    mmpretrain's ``MAEViT.random_masking`` keeps ``int(N * (1 - ratio))``
    patches instead, i.e. it truncates the visible count. The two agree
    when ``N * ratio`` is an integer (``N = 196``, ratio ``0.75``) or its
    fraction exceeds ``.5``; below ``.5`` MAE masks one patch more
    (``N = 16``, ratio ``0.9``: MAE keeps 1, here 2), at exactly ``.5``
    Python rounds half to even (``N = 10``, ratio ``0.45``: MAE keeps 5,
    here 6), and float error can make MAE's product fall just below an
    integer. Both take the visible patches from the same shuffle.

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
                ``round(mask_ratio * N)`` patches. Unused with
                ``num_masking_patches``. Defaults to 0.75.
            d_min, d_max, schedule, num_steps: See :class:`DepthSchedule`.
            hierarchy_cfg (dict, optional): :class:`TreeOptions` fields.
                Defaults to None.
            depth_unit, levels_per_octave, boundary: See the class.
            num_masking_patches (int, optional): The masked count itself
                (BEiT's convention). Defaults to None.

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
