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
        node_size (Tensor, optional): float ``[B]``, the mean size in
            patches of the nodes each image's mask covers, wholly or (the
            boundary node) partly (:func:`masked_node_size`).
            Defaults to None.
    """

    mask: Tensor
    ids_restore: Tensor
    ids_keep: Tensor
    depth: Tensor
    hierarchy: Optional[Hierarchy] = None
    nonfinite: Optional[Tensor] = None
    node_size: Optional[Tensor] = None


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
               generator: Optional[torch.Generator] = None,
               order: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """Mask whole nodes in random order, ``round(mask_ratio * N)`` patches.

    One ``torch.rand(B, N)`` draw (or ``noise``) gives every patch its
    value ``u_i``; a node scores the value of its smallest patch index
    (independent of the values, so node scores are i.i.d. uniform whatever
    the node sizes). Patches are sorted by ``(rank of node score, rank of
    u_i)`` ascending, the first ``N - round(mask_ratio * N)`` are kept and
    the rest masked. When every node is one patch the order is
    ``argsort(u)``, exactly what ``MAEViT.random_masking`` computes from the
    same draw. ``order`` replaces the rank of ``u_i`` inside a node (node
    scores still come from ``u``), e.g. :func:`subtree_order`, so that only
    which patches of the one split node are masked changes.

    Args:
        nodes (Tensor): LongTensor ``[B, N]``, each patch's node id (any
            ids in ``[0, N)``, e.g. ``hierarchy.level(d)``).
        mask_ratio (float): Fraction of patches to mask, in ``(0, 1)``.
        noise (Tensor, optional): float ``[B, N]``, the per-patch uniform
            values; None draws ``torch.rand(B, N)``. Defaults to None.
        generator (torch.Generator, optional): Random source for the draw;
            None uses the global one, as MAE does. Defaults to None.
        order (Tensor, optional): LongTensor ``[B, N]``, each patch's
            place in the order inside its node, distinct values per image;
            None is the rank of ``u_i``. Defaults to None.

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
    if order is not None:
        if order.shape != nodes.shape:
            raise ValueError(f'order must have the shape of nodes '
                             f'{[batch, num]}, got {list(order.shape)}')
        rank = order
    ids_shuffle = torch.argsort(node_rank * num + rank, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    num_keep = num - num_masked(num, mask_ratio)
    ids_keep = ids_shuffle[:, :num_keep]  # [B, N_keep]
    mask = torch.ones(batch, num, device=nodes.device)
    mask[:, :num_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # [B, N]
    return mask, ids_restore, ids_keep


def subtree_order(ancestors: Tensor,
                  level: Tensor,
                  noise: Tensor,
                  generator: Optional[torch.Generator] = None,
                  scores: Optional[Tensor] = None) -> Tensor:
    """Order the patches of every node along its own subtree.

    Inside a node of level ``d`` (image ``b``'s ``level[b]``), patches are
    ordered lexicographically by the random rank of their ancestor at level
    ``d - 1``, then at ``d - 2``, ..., and last by the rank of their own
    value ``u_i`` (level 0). Every node of levels ``1 .. L - 2`` draws a
    fresh uniform score (``torch.rand(B, L - 2, N)``, a node scoring the
    draw at its smallest patch, ties broken by that patch), so the two
    children of every node come in random order, independently at every
    level. Any prefix or suffix of a node in this order is then a union of
    whole descendants, at most one of them split per level: the masked
    part of the boundary node is as contiguous as its subtree allows.

    Args:
        ancestors (Tensor): LongTensor ``[B, L, N]``, the trees
            (:attr:`Hierarchy.ancestors`).
        level (Tensor): LongTensor ``[B]``, the level each image's nodes
            are cut from, ``< L``.
        noise (Tensor): float ``[B, N]``, the per-patch values ``u_i`` of
            :func:`mask_nodes`.
        generator (torch.Generator, optional): Random source of the level
            scores; None uses the global one. Defaults to None.
        scores (Tensor, optional): float32 ``[B, L - 2, N]``, the level
            scores drawn beforehand (uniform in ``[0, 1)``; row ``l - 1``
            for level ``l``, read at each node's smallest patch; rows of
            levels at or above an image's ``level`` are unused). None draws
            them from ``generator``. Defaults to None.

    Returns:
        Tensor: LongTensor ``[B, N]``, each patch's place in the order
        (a permutation of ``0 .. N - 1`` per image), the ``order`` of
        :func:`mask_nodes`.
    """
    batch, num_levels, num = ancestors.shape
    perm = torch.argsort(noise, dim=1)  # [B, N] patches by u_i
    index = torch.arange(num, device=ancestors.device).expand(batch, num)
    if scores is not None:
        want = [batch, max(num_levels - 2, 0), num]
        if list(scores.shape) != want:
            raise ValueError(f'scores must have shape {want}, got '
                             f'{list(scores.shape)}')
    elif num_levels > 2:
        scores = torch.rand(batch, num_levels - 2, num,
                            device=ancestors.device, generator=generator)
    for lvl in range(1, num_levels - 1):  # least significant level first
        nodes = ancestors[:, lvl]  # [B, N]
        first = torch.full_like(nodes, num).scatter_reduce(
            1, nodes, index, 'amin').gather(1, nodes)  # [B, N]
        # float32 draws are multiples of 2**-24: an exact integer key
        key = (scores[:, lvl - 1].gather(1, first) * 2**24).long()
        key = key * num + first  # [B, N], one distinct key per node
        key = key.masked_fill(level[:, None] <= lvl, 0)  # not below d
        perm = perm.gather(
            1, torch.argsort(key.gather(1, perm), dim=1, stable=True))
    return torch.empty_like(perm).scatter_(1, perm, index)  # [B, N]


def masked_node_size(nodes: Tensor, mask: Tensor) -> Tensor:
    """Mean size, in patches, of the nodes a mask covers.

    A node counts with its whole size when any of its patches is masked
    (so the boundary node counts as a whole).

    Args:
        nodes (Tensor): LongTensor ``[B, N]``, each patch's node id.
        mask (Tensor): float ``[B, N]``, 1 = masked.

    Returns:
        Tensor: float ``[B]`` (0 for an image without masked patches).
    """
    sizes = torch.zeros_like(mask).scatter_add_(
        1, nodes, torch.ones_like(mask))  # [B, N] size of node k
    touched = torch.zeros_like(mask).scatter_reduce_(
        1, nodes, mask, 'amax')  # [B, N] 1 if node k is (partly) masked
    return (sizes * touched).sum(1) / touched.sum(1).clamp(min=1)


def level_by_node_size(num_nodes: Tensor, num_patches: int,
                       exponent: Tensor) -> Tensor:
    """Per image, the level whose mean node size is closest to ``2**k``.

    The mean node size of level ``l`` is ``N / num_nodes[b, l]``; the
    distance to ``2**k`` is measured as a ratio, ``|log2(N / num_nodes) -
    k|``, and ties go to the lower level. Levels repeated above a tree's
    top (one node) are never preferred to the top itself.

    Args:
        num_nodes (Tensor): LongTensor ``[B, L]`` (:attr:`Hierarchy.
            num_nodes`).
        num_patches (int): ``N``.
        exponent (Tensor): LongTensor ``[B]``, each image's ``k >= 0``.

    Returns:
        Tensor: LongTensor ``[B]``, levels in ``[0, L)``.
    """
    log_size = math.log2(num_patches) - torch.log2(
        num_nodes.float())  # [B, L]
    return (log_size - exponent[:, None].float()).abs().argmin(dim=1)



# --------------------------------------------------------------------------
# 3. The registered module
# --------------------------------------------------------------------------
_HIERARCHY_OPTIONS = ('rounds', 'tolerance', 'max_levels', 'compact',
                      'compile', 'affinity_norm', 'tolerance_scope',
                      'tie_jitter')
_NONFINITE_MODES = ('random', 'error')
DEPTH_UNITS = ('level', 'node_size')
BOUNDARY_MODES = ('random', 'subtree')


def check_depth_unit_options(depth_unit: str, levels_per_octave: float,
                             boundary: str) -> Tuple[str, float, str]:
    """Validate ``depth_unit``, ``levels_per_octave`` and ``boundary``.

    The options of :class:`EvolvedHierarchicalMasking` and of the data
    pipeline's ``EvolvedHierarchicalMaskGenerator``.

    Args:
        depth_unit (str): One of :data:`DEPTH_UNITS`.
        levels_per_octave (float): A finite number ``>= 1``.
        boundary (str): One of :data:`BOUNDARY_MODES`.

    Returns:
        Tuple[str, float, str]: The three options, ``levels_per_octave`` as
        a float.
    """
    if depth_unit not in DEPTH_UNITS:
        raise ValueError(f'depth_unit must be one of {DEPTH_UNITS}, '
                         f'got {depth_unit!r}')
    if (isinstance(levels_per_octave, bool)
            or not isinstance(levels_per_octave, (int, float))
            or not 1.0 <= levels_per_octave < math.inf):
        raise ValueError('levels_per_octave must be a finite number >= '
                         f'1, got {levels_per_octave!r}')
    if boundary not in BOUNDARY_MODES:
        raise ValueError(f'boundary must be one of {BOUNDARY_MODES}, '
                         f'got {boundary!r}')
    return depth_unit, float(levels_per_octave), boundary


def node_size_levels(depth: int, levels_per_octave: float) -> int:
    """Tree levels built for node sizes up to ``2**depth`` patches.

    Args:
        depth (int): The largest integer depth ``k_max`` to mask at.
        levels_per_octave (float): Levels per doubling of the node size.

    Returns:
        int: ``ceil(levels_per_octave * depth)``.
    """
    return math.ceil(levels_per_octave * depth)


def check_node_size_schedule(schedule: DepthSchedule,
                             grid_size: Tuple[int, int],
                             max_levels: Optional[int] = None) -> None:
    """Refuse node sizes ``2**d`` that no tree over the grid can have.

    Nodes of ``2**k`` patches need ``2**k <= N`` and ``k <= max_levels``
    (a node of level ``l`` holds at most ``2**l`` patches).

    Args:
        schedule (DepthSchedule): The depth schedule (its deepest integer
            depth is checked).
        grid_size (Tuple[int, int]): The patch grid ``(h, w)``.
        max_levels (int, optional): The cap on merge levels, if any.
            Defaults to None.
    """
    h, w = grid_size
    field = ('d_min' if schedule.d_min > schedule.d_max
             and schedule.schedule != 'constant' else 'd_max')
    limit = int(math.floor(math.log2(h * w)))
    if max_levels is not None:
        limit = min(limit, max_levels)
    if schedule.max_depth <= limit:
        return
    raise ValueError(
        f'{field}={getattr(schedule, field):g} reaches depth '
        f'{schedule.max_depth}, i.e. nodes of '
        f'{2**schedule.max_depth} patches (depth_unit=\'node_size\'),'
        f' beyond the limit depth {limit} of a {h}x{w} patch grid '
        f'(2**d <= {h * w} patches' +
        (', d <= hierarchy_cfg.max_levels'
         if max_levels is not None else '') + f'); lower {field}')


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

    What a depth names (``depth_unit``): with ``'level'`` an image drawing
    the integer depth ``k`` is masked with the nodes of its tree's level
    ``k``. With ``'node_size'`` it is masked with the level whose mean node
    size is closest to ``2**k`` patches (:func:`level_by_node_size`), so
    that a depth means the same node size whatever the teacher (a weak
    teacher's trees need more levels to reach it). Stochastic rounding
    keeps its meaning in both units: ``d(t) = 3.4`` gives 60% of the
    images depth 3 and 40% depth 4, i.e. nodes of 8 or 16 patches with
    ``'node_size'``, a mean ``log2`` target node size of 3.4. The trees
    are then built ``ceil(levels_per_octave * k_max)`` levels deep (static
    shapes, no host read), capped by ``hierarchy_cfg.max_levels``; an
    image whose tree has not reached ``2**k`` by then uses its deepest
    level built (``MaskingResult.node_size`` shows the sizes reached).

    Random draws, in order: one ``torch.rand(B, N)`` for the patch values
    (the same draw as ``MAEViT.random_masking``), then, with ``progress``,
    ``torch.rand(B)`` for the depth rounding when ``d(t)`` is not an
    integer, then, with ``hierarchy_cfg.tie_jitter > 0`` and a tree to
    build, ``torch.randint`` of ``B`` tie-breaking seeds, then, with
    ``boundary='subtree'`` and trees of ``L >= 3`` levels,
    ``torch.rand(B, L - 2, N)`` for the order of every node's children
    (:func:`subtree_order`).

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
        depth_unit (str): What a depth names: ``'level'`` (a tree level)
            or ``'node_size'`` (the level whose mean node size is closest
            to ``2**d`` patches; ``d_max`` at most ``log2 N``).
            Defaults to 'level'.
        levels_per_octave (float): With ``depth_unit='node_size'``, tree
            levels built per unit of depth (per doubling of the node
            size), ``>= 1``: the trees are ``ceil(levels_per_octave *
            k_max)`` levels deep for a largest drawn depth ``k_max``.
            Unused with ``'level'``. Defaults to 3.0.
        boundary (str): Which patches of the one partly masked node per
            image are masked: ``'random'`` ones, or ``'subtree'``, in the
            order of the node's own subtree (:func:`subtree_order`), so
            that they form whole descendants. Defaults to 'random'.
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
                 depth_unit: str = 'level',
                 levels_per_octave: float = 3.0,
                 boundary: str = 'random',
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
        (self.depth_unit, self.levels_per_octave,
         self.boundary) = check_depth_unit_options(depth_unit,
                                                   levels_per_octave,
                                                   boundary)
        self._check_schedule_fits_the_trees()

    def _check_schedule_fits_the_trees(self) -> None:
        """Refuse a schedule deeper than every tree over the grid reaches.

        Level unit: every tree over ``N = h * w`` patches reaches at least
        ``min(ceil(log2 N), max_levels)`` levels. (At exactly
        ``ceil(log2 N)`` a tree may already be one node, whose "mask" is
        then a random choice of patches.) Node-size unit:
        :func:`check_node_size_schedule`.
        """
        h, w = self.grid_size
        max_levels = self.hierarchy_cfg.get('max_levels')
        schedule = self.depth_schedule
        field = ('d_min' if schedule.d_min > schedule.d_max
                 and schedule.schedule != 'constant' else 'd_max')
        if self.depth_unit == 'node_size':
            check_node_size_schedule(schedule, self.grid_size, max_levels)
            return
        height = min_tree_height(h * w, max_levels)
        if schedule.max_depth <= height:
            return
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
            ``depth`` (the tree level each mask is cut from: the depth
            clamped to each tree's height, or with ``'node_size'`` the level
            chosen by node size), ``hierarchy`` (the levels the masks
            needed), ``nonfinite`` and ``node_size``.
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
        if self.depth_unit == 'node_size' and levels is not None:
            levels = node_size_levels(levels, self.levels_per_octave)
        hierarchy, nonfinite = self._trees(affinity, levels, batch, device,
                                           generator)
        if nonfinite is not None:
            depth = depth.masked_fill(nonfinite, 0)
        if self.depth_unit == 'node_size':
            level = level_by_node_size(hierarchy.num_nodes,
                                       self.num_patches, depth)  # [B]
        else:
            level = torch.minimum(depth, hierarchy.heights)  # [B]
        nodes = hierarchy.ancestors.gather(
            1, level[:, None, None].expand(batch, 1,
                                           self.num_patches)).squeeze(1)
        order = (
            subtree_order(hierarchy.ancestors, level, noise, generator)
            if self.boundary == 'subtree' else None)
        mask, ids_restore, ids_keep = mask_nodes(
            nodes, self.mask_ratio, noise=noise, order=order)
        return MaskingResult(mask, ids_restore, ids_keep, level, hierarchy,
                             nonfinite, masked_node_size(nodes, mask))

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
                f'nonfinite={self.nonfinite!r}, '
                f'depth_unit={self.depth_unit!r}, '
                f'levels_per_octave={self.levels_per_octave}, '
                f'boundary={self.boundary!r}')
