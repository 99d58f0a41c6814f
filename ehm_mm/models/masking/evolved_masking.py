# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Mask Generation: random masks made of whole tree nodes.

Design section 3, this project's reconstruction of the paper's EMG, read top
to bottom:

1. **Depth schedule.** ``d(t) = d_min + (d_max - d_min) * s(t)`` for training
   progress ``t`` in ``[0, 1]`` (:class:`DepthSchedule`); each image draws
   the integer depth ``floor(d)`` or ``floor(d) + 1`` by unbiased
   stochastic rounding (:func:`stochastic_round`).
2. **Node masking.** Every node of the image's tree at that depth draws a
   uniform random score, every patch takes its node's score with its own
   random value as tie-breaker, and the ``round(mask_ratio * N)`` patches
   with the highest keys are masked (:func:`mask_nodes`). So every image
   masks exactly the same number of patches, masks whole nodes and splits
   at most one. At depth 0 this is MAE's random masking, draw for draw.
3. **The registered module** :class:`EvolvedHierarchicalMasking` owns the
   mask ratio, the patch grid and the schedule, builds the trees
   (:func:`~.hierarchy.build_hierarchy`) only as deep as the drawn depths
   need, and reads nothing back from the device.
"""
import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from .hierarchy import (
    Hierarchy,
    build_hierarchy,
    check_affinity,
    check_grid_size,
    min_tree_height,
)

# --------------------------------------------------------------------------
# 1. Depth schedule
# --------------------------------------------------------------------------
SCHEDULES = ('linear', 'cosine', 'sqrt', 'step', 'constant')

_SHAPES: Dict[str, Callable[[float, int], float]] = dict(
    linear=lambda t, steps: t,
    cosine=lambda t, steps: (1.0 - math.cos(math.pi * t)) / 2.0,
    sqrt=lambda t, steps: math.sqrt(t),
    step=lambda t, steps: min(math.floor(t * steps), steps - 1) / (steps - 1),
    constant=lambda t, steps: 1.0)


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
        schedule (str): One of ``'linear'``, ``'cosine'``, ``'sqrt'``,
            ``'step'``, ``'constant'``. Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule; None
            means one stage per integer depth,
            ``max(2, ceil(|d_max - d_min|) + 1)``. Defaults to None.
    """

    def __init__(self,
                 d_min: float = 0.,
                 d_max: float = 5.,
                 schedule: str = 'linear',
                 num_steps: Optional[int] = None) -> None:
        for name, value in (('d_min', d_min), ('d_max', d_max)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(
                    f'{name} must be a finite number >= 0, got {value!r}')
        if schedule not in _SHAPES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, '
                             f'got {schedule!r}')
        if num_steps is None:
            num_steps = max(2, math.ceil(abs(d_max - d_min)) + 1)
        if (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                or num_steps < 2):
            raise ValueError(
                f'num_steps must be an int >= 2, got {num_steps!r}')
        self.d_min = float(d_min)
        self.d_max = float(d_max)
        self.schedule = schedule
        self.num_steps = num_steps

    @property
    def max_depth(self) -> int:
        """int: The deepest integer depth stochastic rounding can draw."""
        if self.schedule == 'constant':
            return math.ceil(self.d_max)
        return math.ceil(max(self.d_min, self.d_max))

    def __call__(self, progress: float) -> float:
        """Return the continuous depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        if (isinstance(progress, bool)
                or not isinstance(progress, (int, float))
                or not 0.0 <= progress <= 1.0):
            raise ValueError(
                f'progress must be a number in [0, 1], got {progress!r}')
        shape = _SHAPES[self.schedule](float(progress), self.num_steps)
        if shape == 1.0:  # exact end point, no rounding error
            return self.d_max
        return self.d_min + (self.d_max - self.d_min) * shape

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(d_min={self.d_min}, '
                f'd_max={self.d_max}, schedule={self.schedule!r}, '
                f'num_steps={self.num_steps})')


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


# --------------------------------------------------------------------------
# 2. Node masking
# --------------------------------------------------------------------------
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
    """

    mask: Tensor
    ids_restore: Tensor
    ids_keep: Tensor
    depth: Tensor
    hierarchy: Optional[Hierarchy] = None
    nonfinite: Optional[Tensor] = None


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
    the node sizes). Patches are sorted by ``(rank of node score, rank of
    u_i)`` ascending, the first ``N - round(mask_ratio * N)`` are kept and
    the rest masked. When every node is one patch the order is
    ``argsort(u)``, exactly what ``MAEViT.random_masking`` computes from the
    same draw.

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
    ids_shuffle = torch.argsort(noise, dim=1)  # [B, N] MAE's order
    index = torch.arange(num, device=nodes.device).expand(batch, num)
    rank = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle,
                                                  index)  # [B, N] of u_i
    first = torch.full_like(nodes, num).scatter_reduce(
        1, nodes, index, 'amin')  # [B, N] smallest patch of every node
    node_rank = rank.gather(1, first.gather(1, nodes))  # [B, N]
    ids_shuffle = torch.argsort(node_rank * num + rank, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    num_keep = num - num_masked(num, mask_ratio)
    ids_keep = ids_shuffle[:, :num_keep]  # [B, N_keep]
    mask = torch.ones(batch, num, device=nodes.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # [B, N]
    return mask, ids_restore, ids_keep


# --------------------------------------------------------------------------
# 3. The registered module
# --------------------------------------------------------------------------
_HIERARCHY_OPTIONS = ('rounds', 'tolerance', 'max_levels', 'compact',
                      'compile', 'affinity_norm', 'tolerance_scope',
                      'tie_jitter')
_NONFINITE_MODES = ('random', 'error')


@MODELS.register_module()
class EvolvedHierarchicalMasking(BaseModule):
    """Evolved Hierarchical Masking: masks cut from per-image patch trees.

    For a batch of patch affinities (e.g. from
    :func:`~ehm_mm.models.masking.attention_affinity` of a teacher ViT) it
    builds one binary tree per image (:func:`build_hierarchy`), as deep as
    the masks need; picks each image's masking depth from the training
    progress (:class:`DepthSchedule`, stochastic rounding) and masks whole
    nodes of that depth in random order (:func:`mask_nodes`),
    ``round(mask_ratio * N)`` patches per image. Depth 0 is MAE random
    masking. The module has no weights and reads nothing back from the
    device (except with ``nonfinite='error'`` or a depth given as a
    tensor).

    Random draws, in order: one ``torch.rand(B, N)`` for the patch values
    (the same draw as ``MAEViT.random_masking``), then, with ``progress``,
    ``torch.rand(B)`` for the depth rounding when ``d(t)`` is not an
    integer, then, with ``hierarchy_cfg.tie_jitter > 0`` and a tree to
    build, ``torch.randint`` of ``B`` tie-breaking seeds.

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` of the
            affinities (``EHMMAE`` passes its encoder's).
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``.
            Defaults to 0.75.
        d_min (float): Masking depth at the start of training.
            Defaults to 0.
        d_max (float): Masking depth at the end of training. Every tree
            over the grid must reach it: at most ``ceil(log2 N)`` (and
            ``hierarchy_cfg.max_levels``). Defaults to 5.
        schedule (str): How the depth moves from ``d_min`` to ``d_max``:
            ``'linear'``, ``'cosine'``, ``'sqrt'``, ``'step'`` or
            ``'constant'`` (see :class:`DepthSchedule`). Defaults to
            'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule.
            Defaults to None.
        hierarchy_cfg (dict, optional): Keyword options of
            :func:`build_hierarchy`: ``rounds``, ``tolerance``,
            ``max_levels``, ``compact``, ``compile``, ``affinity_norm``,
            ``tolerance_scope``, ``tie_jitter``. Defaults to None (its
            defaults).
        nonfinite (str): What to do with an image whose affinity holds NaN
            or inf (or overflows float32): ``'random'`` gives it a depth-0
            (MAE random) mask and flags it in ``MaskingResult.nonfinite``,
            on the device; ``'error'`` raises a ValueError naming the
            images, which reads the device every call (for debugging).
            Defaults to 'random'.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 grid_size: Sequence[int],
                 mask_ratio: float = 0.75,
                 d_min: float = 0.,
                 d_max: float = 5.,
                 schedule: str = 'linear',
                 num_steps: Optional[int] = None,
                 hierarchy_cfg: Optional[dict] = None,
                 nonfinite: str = 'random',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.grid_size = check_grid_size(grid_size)
        self.mask_ratio = check_mask_ratio(mask_ratio)
        self.depth_schedule = DepthSchedule(d_min, d_max, schedule,
                                            num_steps)
        hierarchy_cfg = dict(hierarchy_cfg or {})
        unknown = sorted(set(hierarchy_cfg) - set(_HIERARCHY_OPTIONS))
        if unknown:
            raise ValueError(f'hierarchy_cfg has unknown keys {unknown}; '
                             f'allowed: {list(_HIERARCHY_OPTIONS)}')
        # Fail at build time on bad options: run them on a 2 x 2 grid.
        build_hierarchy(torch.eye(4)[None], (2, 2),
                        **dict(hierarchy_cfg, compile=False))
        self.hierarchy_cfg = hierarchy_cfg
        if nonfinite not in _NONFINITE_MODES:
            raise ValueError(f'nonfinite must be one of {_NONFINITE_MODES}, '
                             f'got {nonfinite!r}')
        self.nonfinite = nonfinite
        self._check_schedule_fits_the_trees()

    def _check_schedule_fits_the_trees(self) -> None:
        """Refuse a schedule deeper than every tree over the grid reaches.

        Every tree over ``N = h * w`` patches reaches at least
        ``min(ceil(log2 N), max_levels)`` levels. (At exactly
        ``ceil(log2 N)`` a tree may already be one node, whose "mask" is
        then a random choice of patches.)
        """
        h, w = self.grid_size
        height = min_tree_height(h * w, self.hierarchy_cfg.get('max_levels'))
        schedule = self.depth_schedule
        if schedule.max_depth <= height:
            return
        field = ('d_min' if schedule.d_min > schedule.d_max
                 and schedule.schedule != 'constant' else 'd_max')
        raise ValueError(
            f'{field}={getattr(schedule, field):g} reaches depth '
            f'{schedule.max_depth}, beyond the tree height {height} that a '
            f'{h}x{w} patch grid guarantees (ceil(log2 {h * w})' +
            (', hierarchy_cfg.max_levels'
             if 'max_levels' in self.hierarchy_cfg else '') +
            f'); lower {field}')

    @property
    def num_patches(self) -> int:
        """int: ``N = h * w``."""
        return self.grid_size[0] * self.grid_size[1]

    def depth_at(self, progress: float) -> float:
        """The continuous masking depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        return self.depth_schedule(progress)

    def draw_depths(self, progress: float, batch_size: int,
                    rng: random.Random) -> List[int]:
        """Each image's integer depth at ``progress``, drawn on the host.

        Args:
            progress (float): Training progress in ``[0, 1]``.
            batch_size (int): ``B``.
            rng (random.Random): Random source.

        Returns:
            List[int]: ``B`` depths, to pass as ``depth``.
        """
        return stochastic_round_host(self.depth_at(progress), batch_size,
                                     rng)

    def hierarchy(self, affinity: Tensor) -> Hierarchy:
        """The whole trees (every level), e.g. to show or evaluate them.

        Reads the level count on the host.

        Args:
            affinity (Tensor): Patch affinity ``[B, N, N]``.

        Returns:
            Hierarchy: The trees.
        """
        check_affinity(affinity, self.grid_size)
        return build_hierarchy(affinity, self.grid_size,
                               **self.hierarchy_cfg)

    def forward(self,
                affinity: Optional[Tensor],
                progress: Optional[float] = None,
                depth: Union[int, Sequence[int], Tensor, None] = None,
                generator: Optional[torch.Generator] = None
                ) -> MaskingResult:
        """Make masks for a batch.

        Args:
            affinity (Tensor, optional): Patch affinity ``[B, N, N]`` over
                the module's grid (any float dtype; used in float32, no
                gradient). May be None when every depth is 0 (a list of
                zeros): MAE random masks need no tree.
            progress (float, optional): Training progress in ``[0, 1]``;
                the depth is ``d(progress)``, stochastically rounded per
                image on the device. Defaults to None.
            depth (int | Sequence[int] | Tensor, optional): Use these depths
                instead: one int for all images, a list of ``B`` ints (e.g.
                from :meth:`draw_depths`), or a LongTensor ``[B]`` (the
                whole trees are built then, reading the device). Exactly
                one of ``progress`` and ``depth`` must be given. Defaults to
                None.
            generator (torch.Generator, optional): Random source on the
                affinity's device; None uses the global one. Defaults to
                None.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (clamped to each tree's height), ``hierarchy`` (the
            levels the masks needed) and ``nonfinite``.
        """
        if isinstance(progress, (tuple, list)):
            raise TypeError(
                'EvolvedHierarchicalMasking takes its grid_size at build '
                'now; call it as masking(affinity, progress=...) or '
                'masking(affinity, depth=...)')
        if (progress is None) == (depth is None):
            raise ValueError('give exactly one of progress and depth')
        if affinity is None:
            if (isinstance(depth, (int, Tensor)) or depth is None
                    or any(d != 0 for d in depth)):
                raise ValueError('affinity may only be None with depth a '
                                 'list of zeros (MAE random masks)')
            batch = len(depth)
            device = (generator.device if generator is not None else
                      torch.device('cpu'))
        else:
            check_affinity(affinity, self.grid_size)
            batch, device = affinity.shape[0], affinity.device
        # The patch values are the first draw, as in MAEViT.random_masking.
        noise = torch.rand(batch, self.num_patches, device=device,
                           generator=generator)
        depth, levels = self._depths(progress, depth, batch, device,
                                     generator)
        hierarchy, nonfinite = self._trees(affinity, levels, batch, device,
                                           generator)
        if nonfinite is not None:
            depth = depth.masked_fill(nonfinite, 0)
        depth = torch.minimum(depth, hierarchy.heights)  # [B]
        nodes = hierarchy.ancestors.gather(
            1, depth[:, None, None].expand(batch, 1,
                                           self.num_patches)).squeeze(1)
        mask, ids_restore, ids_keep = mask_nodes(
            nodes, self.mask_ratio, noise=noise)
        return MaskingResult(mask, ids_restore, ids_keep, depth, hierarchy,
                             nonfinite)

    def _depths(self, progress: Optional[float],
                depth: Union[int, Sequence[int], Tensor, None], batch: int,
                device: torch.device, generator: Optional[torch.Generator]
                ) -> Tuple[Tensor, Optional[int]]:
        """Per-image depths ``[B]`` and the tree levels they need.

        Returns:
            Tuple[Tensor, int | None]: The depths and the number of merge
            levels to build (None: all of them).
        """
        if progress is not None:
            value = self.depth_at(progress)
            return (stochastic_round(value, batch, device, generator),
                    math.ceil(value))
        if isinstance(depth, Tensor):
            if depth.dtype != torch.long or depth.shape != (batch, ):
                raise ValueError(f'depth must be a LongTensor [{batch}], got'
                                 f' {depth.dtype} {list(depth.shape)}')
            if bool((depth < 0).any()):
                raise ValueError('depth must be >= 0')
            return depth.to(device), None
        if isinstance(depth, int) and not isinstance(depth, bool):
            depth = [depth] * batch
        if (not isinstance(depth, Sequence) or len(depth) != batch
                or not all(isinstance(d, int) and not isinstance(d, bool)
                           and d >= 0 for d in depth)):
            raise ValueError(f'depth must be an int >= 0 or {batch} of them, '
                             f'got {depth!r}')
        host = torch.tensor(depth, dtype=torch.long)
        if device.type == 'cuda':  # an asynchronous copy: no device sync
            return host.pin_memory().to(device, non_blocking=True), max(depth)
        return host.to(device), max(depth)

    def _trees(self,
               affinity: Optional[Tensor],
               levels: Optional[int],
               batch: int,
               device: torch.device,
               generator: Optional[torch.Generator] = None
               ) -> Tuple[Hierarchy, Optional[Tensor]]:
        """The trees, ``levels`` deep, and the non-finite images.

        Returns:
            Tuple[Hierarchy, Tensor | None]: The trees (only the leaves
            when ``levels`` is 0) and, with ``nonfinite='random'``, a
            BoolTensor ``[B]`` of the images whose affinity is not finite.
        """
        if levels == 0:  # MAE random masking: every patch its own node
            leaves = torch.arange(self.num_patches, device=device)
            return Hierarchy(
                leaves.expand(batch, 1, -1),
                torch.full((batch, 1), self.num_patches, device=device),
                self.grid_size), None
        if self.nonfinite == 'error':
            return build_hierarchy(
                affinity, self.grid_size, num_levels=levels,
                check_finite=True, generator=generator,
                **self.hierarchy_cfg), None
        # NaN and inf propagate into the sum, as does a float32 overflow.
        # A bad image's tree is meaningless but every image's tree depends
        # on its own affinity only, and bad images are masked at depth 0.
        finite = torch.isfinite(
            affinity.detach().sum((1, 2), dtype=torch.float32))  # [B]
        return build_hierarchy(
            affinity, self.grid_size, num_levels=levels, check_finite=False,
            generator=generator, **self.hierarchy_cfg), ~finite

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, mask_ratio={self.mask_ratio}, '
                f'depth_schedule={self.depth_schedule!r}, '
                f'hierarchy_cfg={self.hierarchy_cfg}, '
                f'nonfinite={self.nonfinite!r}')
