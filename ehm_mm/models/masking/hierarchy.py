# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Adaptive Hierarchy Establishment: a binary tree over the patches.

Torch only. Every image of a batch gets its own binary tree, built by
level-synchronous merging of 4-adjacent, similar nodes (design section 2,
this project's reconstruction of the paper's AHE). The merge rule:

* level 0 holds the ``N`` patches; a merged node is adjacent to whatever its
  members touch on the patch grid;
* node similarity is average linkage,
  ``sum_{i in P, j in Q} S_ij / (|P| |Q|)``, symmetrised;
* going up one level, every node proposes its most similar free neighbour,
  mutual proposals are matched, for ``rounds`` rounds; only pairs within
  ``tolerance`` of what *each* of the two could have had with its best
  neighbour may match, so a node waits a level rather than merging across
  a strong boundary (:mod:`.tree_level`);
* each matched pair becomes one parent, an unmatched node is carried up.

:func:`build_hierarchy` reads top to bottom: validate, rescale and measure
the affinity (:mod:`.affinity_norm`), then one level at a time. Asked for
a fixed number of levels (``num_levels``, what mask generation does) the
shapes are static and nothing is read back to the host; without it, levels
are added until every tree is one node (a host read). The options are
:class:`TreeOptions`.
"""
import math
from dataclasses import dataclass
from numbers import Integral
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .affinity_norm import (  # noqa: F401  (re-exported)
    AFFINITY_NORMS,
    _raise_if_not_finite,
    nonfinite_images,
    normalize_affinity,
    offdiagonal_moments,
    offdiagonal_stats,
)
from .tree_level import (  # noqa: F401  (_level, _COMPILED: for tests)
    _COMPILED,
    _MAX_PATCHES,
    _compiled_level,
    _jitter_seeds,
    _level,
    _level_seed,
    grid_edges,
)

TOLERANCE_SCOPES = ('image', 'level')


@dataclass
class Hierarchy:
    """Per-image binary trees over the patches of a batch.

    Level 0 holds the leaves (the patches, node ``i`` is patch ``i``); every
    node of level ``l + 1`` is the union of one or two adjacent nodes of
    level ``l``. Node ids of a level are ``0 .. num_nodes - 1``, numbered in
    the order of each node's smallest patch index.

    Args:
        ancestors (Tensor): LongTensor ``[B, L, N]``, the id of each patch's
            ancestor node at every level (level 0 is the identity).
        num_nodes (Tensor): LongTensor ``[B, L]``, the node count of every
            level, non-increasing along ``L``.
        grid_size (Tuple[int, int]): The patch grid ``(h, w)``,
            ``h * w == N``; patch ``i`` sits at row ``i // w``, column
            ``i % w``.
    """

    ancestors: Tensor
    num_nodes: Tensor
    grid_size: Tuple[int, int]

    @classmethod
    def leaves(cls, batch_size: int, grid_size: Tuple[int, int],
               device: Optional[torch.device] = None) -> 'Hierarchy':
        """Trees of one level, every patch its own node (MAE's masks).

        Args:
            batch_size (int): ``B``.
            grid_size (Tuple[int, int]): The patch grid ``(h, w)``.
            device (torch.device, optional): Defaults to None (CPU).

        Returns:
            Hierarchy: ``ancestors`` ``[B, 1, N]``, ``num_nodes`` ``[B, 1]``.
        """
        num = grid_size[0] * grid_size[1]
        patches = torch.arange(num, device=device)
        return cls(patches.expand(batch_size, 1, num),
                   torch.full((batch_size, 1), num, device=device),
                   tuple(grid_size))

    @property
    def batch_size(self) -> int:
        """int: The number of images ``B``."""
        return self.ancestors.shape[0]

    @property
    def num_levels(self) -> int:
        """int: The number of levels ``L``, leaves included."""
        return self.ancestors.shape[1]

    @property
    def num_patches(self) -> int:
        """int: The number of patches ``N``."""
        return self.ancestors.shape[2]

    @property
    def heights(self) -> Tensor:
        """Tensor: LongTensor ``[B]``, each tree's height.

        The index of the first level holding a single node, or ``L - 1``
        when the levels stopped before that.
        """
        heights = (self.num_nodes > 1).sum(dim=1)
        return heights.clamp(max=self.num_levels - 1)

    def level(self, level: int) -> Tensor:
        """Return each patch's ancestor id at one level.

        Args:
            level (int): The level, ``0 <= level < L`` (negative values
                count from the top).

        Returns:
            Tensor: LongTensor ``[B, N]``.
        """
        if not -self.num_levels <= level < self.num_levels:
            raise ValueError(f'level must be in [-{self.num_levels}, '
                             f'{self.num_levels}), got {level}')
        return self.ancestors[:, level]

    def node_sizes(self) -> Tensor:
        """Count the patches of every node.

        Returns:
            Tensor: LongTensor ``[B, L, N]``; entry ``[b, l, k]`` is the size
            of node ``k`` of level ``l`` (0 for ``k >= num_nodes[b, l]``).
        """
        sizes = torch.zeros_like(self.ancestors)
        return sizes.scatter_add_(2, self.ancestors,
                                  torch.ones_like(self.ancestors))

    def to(self, device: torch.device) -> 'Hierarchy':
        """Move the tensors to ``device``.

        Args:
            device (torch.device): The target device.

        Returns:
            Hierarchy: A hierarchy on ``device``.
        """
        return Hierarchy(
            self.ancestors.to(device), self.num_nodes.to(device),
            self.grid_size)


# --------------------------------------------------------------------------
# Validation (shapes and options only: nothing here reads the device)
# --------------------------------------------------------------------------
def check_grid_size(grid_size: Sequence[int],
                    num_patches: Optional[int] = None) -> Tuple[int, int]:
    """Validate a patch grid ``(h, w)``.

    Args:
        grid_size (Sequence[int]): The grid ``(h, w)``.
        num_patches (int, optional): When given, ``h * w`` must equal it.
            Defaults to None.

    Returns:
        Tuple[int, int]: ``(h, w)`` as Python ints.
    """
    if (not isinstance(grid_size, Sequence) or len(grid_size) != 2
            or not all(isinstance(s, Integral) and not isinstance(s, bool)
                       for s in grid_size)):
        raise TypeError('grid_size must be a pair of ints (h, w), '
                        f'got {grid_size!r}')
    h, w = int(grid_size[0]), int(grid_size[1])
    if h < 1 or w < 1:
        raise ValueError(f'grid_size must be positive, got {(h, w)}')
    if h * w > _MAX_PATCHES:
        raise ValueError(f'grid_size {(h, w)} has {h * w} patches; at most '
                         f'{_MAX_PATCHES} are supported')
    if num_patches is not None and h * w != num_patches:
        raise ValueError(f'grid_size {(h, w)} holds {h * w} patches but the '
                         f'affinity has N={num_patches}')
    return h, w


def check_affinity(affinity: Tensor,
                   grid_size: Sequence[int]) -> Tuple[int, int]:
    """Validate an affinity ``[B, N, N]`` against a grid ``(h, w)``.

    Only type and shape are checked (no device read); see
    :func:`nonfinite_images` for NaN / inf.

    Args:
        affinity (Tensor): The affinity, a floating tensor ``[B, N, N]``.
        grid_size (Sequence[int]): The patch grid ``(h, w)``.

    Returns:
        Tuple[int, int]: ``(h, w)`` as Python ints.
    """
    if not isinstance(affinity, Tensor):
        raise TypeError('affinity must be a torch.Tensor, got '
                        f'{type(affinity).__name__}')
    if not affinity.is_floating_point():
        raise TypeError('affinity must be a floating tensor, got '
                        f'{affinity.dtype}')
    if (affinity.dim() != 3 or affinity.shape[1] != affinity.shape[2]
            or affinity.shape[0] < 1 or affinity.shape[1] < 1):
        raise ValueError('affinity must have shape [B, N, N] with B, N >= 1, '
                         f'got {list(affinity.shape)}')
    return check_grid_size(grid_size, affinity.shape[1])


def default_max_levels(num_patches: int) -> int:
    """The default cap on merge levels: ``2 * ceil(log2 N)``.

    A perfectly balanced tree needs ``ceil(log2 N)`` levels; the cap leaves
    as many again for nodes that wait at strong boundaries.

    Args:
        num_patches (int): The number of patches ``N``.

    Returns:
        int: The cap (0 when ``N == 1``).
    """
    return 2 * min_tree_height(num_patches)


def min_tree_height(num_patches: int,
                    max_levels: Optional[int] = None) -> int:
    """The height every tree over ``N`` patches is guaranteed to reach.

    The node count at most halves per level, so every tree has at least
    ``ceil(log2 N)`` levels above its leaves, unless ``max_levels`` stops it
    earlier.

    Args:
        num_patches (int): The number of patches ``N``.
        max_levels (int, optional): The cap on merge levels; None means
            :func:`default_max_levels`. Defaults to None.

    Returns:
        int: The guaranteed height.
    """
    height = math.ceil(math.log2(num_patches)) if num_patches > 1 else 0
    if max_levels is not None:
        height = min(height, max_levels)
    return height


def _check_level_count(name: str, value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, int) or value < 0):
        raise ValueError(
            f'{name} must be an int >= 0 or None, got {value!r}')


@dataclass(frozen=True)
class TreeOptions:
    """The options of :func:`build_hierarchy`, validated once when made.

    Args:
        rounds (int): Matching rounds per level (1 is pure reciprocal
            nearest-neighbour merging). Defaults to 4.
        tolerance (float): How much worse than its best neighbour overall a
            node may accept as a partner (checked for both nodes of a
            pair), in units of the spread that ``tolerance_scope`` names.
            Lower keeps boundaries more strictly but leaves more nodes
            waiting (unbalanced trees); ``inf`` accepts any neighbour.
            Defaults to 1.0.
        max_levels (int, optional): Cap on merge levels; None means
            ``2 * ceil(log2 N)`` (:func:`default_max_levels`).
            Defaults to None.
        compact (bool, optional): Shrink the node dimension to the batch's
            largest node count at every level, reading that count on the
            host (free on CPU, a device sync elsewhere). None turns it on
            for CPU tensors without ``compile``. Results never depend on it.
            Defaults to None.
        compile (bool): Run every level through ``torch.compile`` (static
            shapes only, i.e. ``compact`` off). Defaults to False.
        affinity_norm (str): Rescale the affinity first
            (:func:`normalize_affinity`): ``'none'``, ``'degree'``,
            ``'profile'`` or ``'centered_profile'``; the tolerance and the
            jitter are measured on the rescaled affinity. Defaults to 'none'.
        tolerance_scope (str): What ``tolerance`` is measured against:
            ``'image'``, the standard deviation of the image's off-diagonal
            affinities, the same at every level; ``'level'``, that of the
            level's own candidate similarities (the average linkages across
            the edges between two nodes, each grid edge counted once per
            direction), recomputed at every level. Defaults to 'image'.
        tie_jitter (float): Break ties (and near-ties) between candidate
            pairs by adding, at every level, a seeded uniform value in
            ``[0, tie_jitter * s)`` to every node pair's similarity, ``s``
            the image's off-diagonal standard deviation plus the absolute
            off-diagonal mean (1 for an all-zero affinity). The value depends
            only on the image's seed, the level and the node pair; the
            tolerated loss grows by the same amplitude, so pairs within it
            of a node's best stay acceptable. 0 breaks ties by pair id (the
            smaller id wins, a top-left bias). Defaults to 0.
    """

    rounds: int = 4
    tolerance: float = 1.0
    max_levels: Optional[int] = None
    compact: Optional[bool] = None
    compile: bool = False
    affinity_norm: str = 'none'
    tolerance_scope: str = 'image'
    tie_jitter: float = 0.0

    def __post_init__(self) -> None:
        rounds, jitter = self.rounds, self.tie_jitter
        if isinstance(rounds, bool) or not isinstance(rounds, int) or (
                rounds < 1):
            raise ValueError(f'rounds must be an int >= 1, got {rounds!r}')
        if not self.tolerance >= 0:
            raise ValueError(f'tolerance must be >= 0, got {self.tolerance!r}')
        _check_level_count('max_levels', self.max_levels)
        if self.affinity_norm not in AFFINITY_NORMS:
            raise ValueError(f'affinity_norm must be one of {AFFINITY_NORMS}'
                             f', got {self.affinity_norm!r}')
        if self.tolerance_scope not in TOLERANCE_SCOPES:
            raise ValueError(f'tolerance_scope must be one of '
                             f'{TOLERANCE_SCOPES}, got '
                             f'{self.tolerance_scope!r}')
        if (isinstance(jitter, bool) or not isinstance(jitter, (int, float))
                or not 0 <= jitter < math.inf):
            raise ValueError('tie_jitter must be a finite number >= 0, got '
                             f'{jitter!r}')
        if self.compile and self.compact:
            raise ValueError('compile needs static shapes: compact=False')

    @classmethod
    def from_cfg(cls, cfg: Optional[dict]) -> 'TreeOptions':
        """Options from a config dict (``hierarchy_cfg``).

        Args:
            cfg (dict, optional): Some of the fields; None means none.

        Returns:
            TreeOptions: The validated options.
        """
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f'hierarchy_cfg has unknown keys {unknown}; '
                             f'allowed: {list(cls.__dataclass_fields__)}')
        return cls(**cfg)

    def kwargs(self) -> dict:
        """dict: The options as keyword arguments of build_hierarchy."""
        return {name: getattr(self, name)
                for name in self.__dataclass_fields__}


# --------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------
def build_hierarchy(affinity: Tensor,
                    grid_size: Sequence[int],
                    rounds: int = 4,
                    tolerance: float = 1.0,
                    max_levels: Optional[int] = None,
                    num_levels: Optional[int] = None,
                    compact: Optional[bool] = None,
                    check_finite: bool = True,
                    compile: bool = False,
                    affinity_norm: str = 'none',
                    tolerance_scope: str = 'image',
                    tie_jitter: float = 0.0,
                    generator: Optional[torch.Generator] = None
                    ) -> Hierarchy:
    """Build one binary tree per image from a patch affinity.

    The affinity is used in float32 (half precision input is fine) and
    symmetrised in the similarity. The options after ``grid_size`` are
    :class:`TreeOptions`'s, documented there, validated by it.

    Args:
        affinity (Tensor): Patch affinity ``[B, N, N]``, higher means more
            similar; any real scale.
        grid_size (Sequence[int]): The patch grid ``(h, w)``, ``h * w == N``,
            patches in row-major order.
        rounds, tolerance, max_levels, compact, compile, affinity_norm,
            tolerance_scope, tie_jitter: See :class:`TreeOptions`.
        num_levels (int, optional): Build exactly
            ``min(num_levels, max_levels)`` merge levels, with static shapes
            and no host read (a tree that is one node early keeps that
            node). None adds levels until every image is one node, which
            reads the level count on the host. Defaults to None.
        check_finite (bool): Raise a ValueError naming the images whose
            affinity holds NaN or inf or overflows float32 (host reads).
            When False, such images get meaningless trees and the caller
            must deal with them (see :func:`offdiagonal_stats`).
            Defaults to True.
        generator (torch.Generator, optional): Random source (on the
            affinity's device) of the per-image jitter seeds, one
            ``torch.randint`` draw of ``B`` values when ``tie_jitter > 0``;
            None derives each image's seed from its affinity (no draw).
            Defaults to None.

    Returns:
        Hierarchy: ``ancestors`` ``[B, L, N]`` and ``num_nodes`` ``[B, L]``.
    """
    h, w = check_affinity(affinity, grid_size)
    TreeOptions(rounds, tolerance, max_levels, compact, compile,
                affinity_norm, tolerance_scope, tie_jitter)  # validates
    _check_level_count('num_levels', num_levels)
    num = h * w
    levels = default_max_levels(num) if max_levels is None else max_levels
    if num_levels is not None:
        levels = min(levels, num_levels)
    if compact is None:
        compact = affinity.device.type == 'cpu' and not compile
    with torch.no_grad():
        raw = affinity.detach().float()
        weights = normalize_affinity(raw, affinity_norm)
        finite, mean, std = offdiagonal_moments(weights)
        if check_finite:
            _raise_if_not_finite(raw, finite)
        level_spread = (tolerance_scope == 'level'
                        and math.isfinite(tolerance))
        if level_spread:  # the level's spread is applied in _match
            margin = torch.full_like(std, tolerance)[:, None]
        else:
            margin = (std * tolerance if math.isfinite(tolerance) else
                      torch.full_like(std, math.inf))[:, None]  # [B, 1]
        batch = weights.shape[0]
        jitter = seed = None
        if tie_jitter > 0:
            scale = std + mean.abs()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            jitter = (scale * tie_jitter)[:, None]  # [B, 1]
            seed = _jitter_seeds(raw, generator)  # [B, 1]
        src, dst = grid_edges(h, w, weights.device)
        u, v = src.expand(batch, -1), dst.expand(batch, -1)  # [B, E]
        node = torch.arange(num, device=weights.device).expand(batch, num)
        sizes = weights.new_ones(batch, num)  # [B, K]
        step = _compiled_level(weights.device) if compile else _level
        ancestors, counts = [node], [torch.full_like(node[:, 0], num)]
        for level in range(levels):
            if compact and weights.shape[1] == 1:  # one node: a repeat
                ancestors.append(node)
                counts.append(counts[-1])
                continue
            weights, sizes, u, v, node, count = step(
                weights, sizes, u, v, node, margin, rounds, compact,
                level_spread, jitter,
                None if seed is None else _level_seed(seed, level))
            ancestors.append(node)
            counts.append(count)
        num_nodes = torch.stack(counts, dim=1)  # [B, L]
        if num_levels is None:
            # Drop the trailing levels on which every image is already one
            # node (a host read).
            keep = 1 + int((num_nodes[:, :-1] > 1).any(dim=0).sum())
            ancestors, num_nodes = ancestors[:keep], num_nodes[:, :keep]
        return Hierarchy(
            torch.stack(ancestors, dim=1), num_nodes.contiguous(), (h, w))
