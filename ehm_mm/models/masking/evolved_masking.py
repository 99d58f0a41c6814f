# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Mask Generation: random masks made of whole tree nodes.

Design section 3, this project's reconstruction of the paper's EMG. A mask
is made in one path, :func:`cut_masks`, which both the registered module
:class:`EvolvedHierarchicalMasking` and the data pipeline's
``EvolvedHierarchicalMaskGenerator`` call:

1. **Depth.** ``d(t)`` of the :class:`~.mask_spec.DepthSchedule` at
   training progress ``t``, stochastically rounded per image
   (:func:`~.mask_spec.stochastic_round_host`).
2. **Tree.** :func:`~.hierarchy.build_hierarchy`, only as deep as the
   drawn depths need (:meth:`~.mask_spec.MaskSpec.tree_levels`).
3. **Level.** Each image's level: its depth, clamped to its tree's height,
   or with ``depth_unit='node_size'`` the level whose mean node size is
   closest to ``2**depth`` (:func:`level_by_node_size`).
4. **Node masking.** Every node of that level draws a uniform random
   score, every patch takes its node's score with its own random value as
   tie-breaker (or its place in the node's subtree,
   :func:`subtree_order`), and the ``num_masked`` patches with the highest
   keys are masked (:func:`mask_nodes`). Every image masks exactly the same
   number of patches, whole nodes and at most one split. At depth 0 this
   is MAE's random masking, draw for draw.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.registry import MODELS
from torch import Tensor

from .depth_schedule import (  # noqa: F401  (SCHEDULES re-exported)
    SCHEDULES,
    DepthSchedule,
    stochastic_round,
    stochastic_round_host,
)
from .hierarchy import Hierarchy, build_hierarchy, check_affinity
from .mask_source import MaskingResult, MaskSource, split_shuffle
from .mask_spec import MaskSpec, check_mask_ratio, num_masked


# --------------------------------------------------------------------------
# Node masking
# --------------------------------------------------------------------------
def mask_nodes(nodes: Tensor,
               mask_ratio: Optional[float] = None,
               noise: Optional[Tensor] = None,
               generator: Optional[torch.Generator] = None,
               order: Optional[Tensor] = None,
               num_mask: Optional[int] = None
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
        num_mask (int, optional): The masked count itself, instead of
            ``mask_ratio`` (give one of the two). Defaults to None.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: ``mask`` float ``[B, N]`` (1 =
        masked), ``ids_restore`` ``[B, N]`` and ``ids_keep``
        ``[B, N - round(mask_ratio * N)]``.
    """
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
    if num_mask is None:
        num_mask = num_masked(num, check_mask_ratio(mask_ratio))
    return split_shuffle(torch.argsort(node_rank * num + rank, dim=1),
                         num_mask)


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


def cut_masks(hierarchy: Hierarchy,
              depth: Tensor,
              noise: Tensor,
              spec: MaskSpec,
              top: Optional[Tensor] = None,
              generator: Optional[torch.Generator] = None,
              scores: Optional[Tensor] = None) -> MaskingResult:
    """Cut each image's mask from its tree: steps 3 and 4 of the module doc.

    The one mask path of the model and the data pipeline. Pure: no host
    read, static shapes; random draws only with ``boundary='subtree'``
    and no ``scores`` (:func:`subtree_order`'s level scores).

    Args:
        hierarchy (Hierarchy): The trees, at least as deep as ``depth``
            needs (:meth:`Hierarchy.leaves` at depth 0).
        depth (Tensor): LongTensor ``[B]``, each image's integer depth.
        noise (Tensor): float ``[B, N]``, the per-patch uniform values.
        spec (MaskSpec): The masking (``num_masked``, ``depth_unit``,
            ``boundary``).
        top (Tensor, optional): LongTensor ``[B]``, the highest level each
            image may use with ``'node_size'`` (images of one batch that
            asked for fewer levels than were built); None: every level.
            Defaults to None.
        generator (torch.Generator, optional): Random source of the subtree
            scores. Defaults to None.
        scores (Tensor, optional): The subtree scores drawn beforehand
            (see :func:`subtree_order`). Defaults to None.

    Returns:
        MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``, ``depth``
        (the level each mask is cut from), ``hierarchy`` and ``node_size``.
    """
    batch, num = noise.shape
    if spec.depth_unit == 'node_size':
        counts = hierarchy.num_nodes
        if top is not None:  # levels above an image's own: never chosen
            upto = torch.minimum(
                torch.arange(hierarchy.num_levels, device=top.device)[None],
                top.clamp(max=hierarchy.num_levels - 1)[:, None])  # [B, L]
            counts = counts.gather(1, upto)
        level = level_by_node_size(counts, num, depth)  # [B]
    else:
        level = torch.minimum(depth, hierarchy.heights)  # [B]
    nodes = hierarchy.ancestors.gather(
        1, level[:, None, None].expand(batch, 1, num)).squeeze(1)  # [B, N]
    order = (subtree_order(hierarchy.ancestors, level, noise, generator,
                           scores) if spec.boundary == 'subtree' else None)
    mask, ids_restore, ids_keep = mask_nodes(
        nodes, noise=noise, order=order, num_mask=spec.num_masked)
    return MaskingResult(mask, ids_restore, ids_keep, level, hierarchy,
                         node_size=masked_node_size(nodes, mask))


# --------------------------------------------------------------------------
# The registered module
# --------------------------------------------------------------------------
NONFINITE_MODES = ('random', 'error')


@MODELS.register_module()
class EvolvedHierarchicalMasking(MaskSource):
    """Evolved Hierarchical Masking: masks cut from per-image patch trees.

    For a batch of patch affinities (e.g. from
    :func:`~ehm_mm.models.masking.attention_affinity` of a teacher ViT) it
    draws each image's depth, builds the trees only as deep as needed and
    cuts the masks (:func:`cut_masks`), ``round(mask_ratio * N)`` patches
    per image; depth 0 is MAE random masking. The options form one
    :class:`~.mask_spec.MaskSpec` (:attr:`spec`), validated when built.
    No weights; nothing is read back from the device (except with
    ``nonfinite='error'`` or a depth given as a tensor).

    With ``depth_unit='node_size'`` a depth ``k`` names the level whose
    mean node size is closest to ``2**k`` patches, the same size whatever
    the teacher; the trees are then ``ceil(levels_per_octave * k_max)``
    levels deep (capped by ``hierarchy_cfg.max_levels``), and an image
    whose tree has not reached ``2**k`` uses its deepest level.

    Random draws, in order: one ``torch.rand(B, N)`` for the patch values
    (the draw of ``MAEViT.random_masking``), then, with ``progress``,
    ``torch.rand(B)`` for the depth rounding when ``d(t)`` is not an
    integer, then, with ``hierarchy_cfg.tie_jitter > 0`` and a tree to
    build, ``torch.randint`` of ``B`` tie-breaking seeds, then, with
    ``boundary='subtree'`` and trees of ``L >= 3`` levels,
    ``torch.rand(B, L - 2, N)`` (:func:`subtree_order`).

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` of the
            affinities (the model fills it in).
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``.
            Defaults to 0.75.
        d_min (float): Masking depth at the start of training.
            Defaults to 0.
        d_max (float): Masking depth at the end of training; every tree
            over the grid must reach it (:class:`~.mask_spec.MaskSpec`).
            Defaults to 5.
        schedule (str): ``'linear'``, ``'cosine'``, ``'sqrt'``, ``'step'``
            or ``'constant'`` (:class:`~.depth_schedule.DepthSchedule`).
            Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule.
            Defaults to None.
        hierarchy_cfg (dict, optional): :class:`~.hierarchy.TreeOptions`
            fields: ``rounds``, ``tolerance``, ``max_levels``, ``compact``,
            ``compile``, ``affinity_norm``, ``tolerance_scope``,
            ``tie_jitter``. Defaults to None (its defaults).
        nonfinite (str): What to do with an image whose affinity holds NaN
            or inf (or overflows float32): ``'random'`` gives it a depth-0
            (MAE random) mask and flags it in ``MaskingResult.nonfinite``,
            on the device; ``'error'`` raises a ValueError naming the
            images, which reads the device every call (for debugging).
            Defaults to 'random'.
        depth_unit (str): ``'level'`` or ``'node_size'`` (see above).
            Defaults to 'level'.
        levels_per_octave (float): With ``'node_size'``, tree levels built
            per unit of depth, ``>= 1``. Defaults to 3.0.
        boundary (str): Which patches of the one partly masked node per
            image are masked: ``'random'`` ones, or ``'subtree'``, whole
            descendants in the order of the node's own subtree
            (:func:`subtree_order`). Defaults to 'random'.
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
        super().__init__(grid_size, mask_ratio, init_cfg)
        self.spec = MaskSpec.create(
            grid_size, mask_ratio, d_min, d_max, schedule, num_steps,
            hierarchy_cfg, depth_unit, levels_per_octave, boundary)
        self.hierarchy_cfg = dict(hierarchy_cfg or {})
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f'nonfinite must be one of {NONFINITE_MODES}, '
                             f'got {nonfinite!r}')
        self.nonfinite = nonfinite

    @property
    def depth_schedule(self) -> DepthSchedule:
        """DepthSchedule: The spec's depth schedule."""
        return self.spec.schedule

    def depth_at(self, progress: float) -> float:
        """The continuous masking depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        return self.spec.schedule(progress)

    def draw_depths(self, progress: float, batch_size: int,
                    rng) -> List[int]:
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

    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """The whole trees of an affinity (every level; a host read).

        Args:
            affinity (Tensor): Patch affinity ``[B, N, N]``.
            batch_size (int, optional): Unused. Defaults to None.
            generator (torch.Generator, optional): Source of the jitter
                seeds (``tie_jitter > 0``). Defaults to None.

        Returns:
            Hierarchy: The trees.
        """
        check_affinity(affinity, self.grid_size)
        return build_hierarchy(affinity, self.grid_size, generator=generator,
                               **self.hierarchy_cfg)

    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Union[int, Sequence[int], Tensor, None],
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """EHM masks (see :meth:`MaskSource.forward`): steps 1-4.

        ``progress`` rounds ``d(progress)`` per image on the device;
        ``depth`` (exactly one of the two) gives the depths: an int, a list
        of ``B`` ints (e.g. :meth:`draw_depths`) or a LongTensor ``[B]``
        (the whole trees are built then, reading the device).

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (the tree level each mask is cut from), ``hierarchy``
            (the levels the masks needed), ``nonfinite`` and ``node_size``.
        """
        if (progress is None) == (depth is None):
            raise ValueError('give exactly one of progress and depth')
        if affinity is not None:
            check_affinity(affinity, self.grid_size)
        # The patch values are the first draw, as in MAEViT.random_masking.
        noise = torch.rand(batch, self.num_patches, device=device,
                           generator=generator)
        depth, deepest = self._depths(progress, depth, batch, device,
                                      generator)
        levels = None if deepest is None else self.spec.tree_levels(deepest)
        hierarchy, nonfinite = self._trees(affinity, levels, batch, device,
                                           generator)
        if nonfinite is not None:
            depth = depth.masked_fill(nonfinite, 0)
        result = cut_masks(hierarchy, depth, noise, self.spec,
                           generator=generator)
        result.nonfinite = nonfinite
        return result

    def _depths(self, progress: Optional[float],
                depth: Union[int, Sequence[int], Tensor, None], batch: int,
                device: torch.device, generator: Optional[torch.Generator]
                ) -> Tuple[Tensor, Optional[int]]:
        """Per-image depths ``[B]`` and the deepest (None: unknown)."""
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

    def _trees(self, affinity: Optional[Tensor], levels: Optional[int],
               batch: int, device: torch.device,
               generator: Optional[torch.Generator] = None
               ) -> Tuple[Hierarchy, Optional[Tensor]]:
        """The trees, ``levels`` deep (None: whole), and the bad images.

        Returns:
            Tuple[Hierarchy, Tensor | None]: The trees (only the leaves
            when ``levels`` is 0) and, with ``nonfinite='random'``, a
            BoolTensor ``[B]`` of the images whose affinity is not finite.
        """
        if levels == 0:  # MAE random masking: every patch its own node
            return Hierarchy.leaves(batch, self.grid_size, device), None
        check = self.nonfinite == 'error'
        tree = build_hierarchy(
            affinity, self.grid_size, num_levels=levels, check_finite=check,
            generator=generator, **self.hierarchy_cfg)
        if check:
            return tree, None
        # NaN and inf propagate into the sum, as does a float32 overflow.
        # A bad image's tree is meaningless but every image's tree depends
        # on its own affinity only, and bad images are masked at depth 0.
        return tree, ~torch.isfinite(
            affinity.detach().sum((1, 2), dtype=torch.float32))

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, mask_ratio={self.mask_ratio}, '
                f'depth_schedule={self.spec.schedule!r}, '
                f'hierarchy_cfg={self.hierarchy_cfg}, '
                f'nonfinite={self.nonfinite!r}, {self.spec.unit_repr()}')
