# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Adaptive Hierarchy Establishment: a binary tree over the patches.

Torch only. Every image of a batch gets its own binary tree, built by
level-synchronous merging of 4-adjacent, similar nodes (design section 2,
this project's reconstruction of the paper's AHE):

* level 0 holds the ``N`` patches; a merged node is adjacent to whatever its
  members touch on the patch grid;
* node similarity is average linkage,
  ``sum_{i in P, j in Q} S_ij / (|P| |Q|)``, symmetrised;
* going up one level, every node proposes its most similar free neighbour,
  mutual proposals are matched, and this repeats for ``rounds`` rounds.
  Only pairs whose similarity is within ``tolerance`` (in units of the
  image's affinity spread) of what *each* of the two could have had with its
  best neighbour may be matched, so a node waits a level rather than merging
  across a strong boundary;
* each matched pair becomes one parent, an unmatched node is carried up.

Three options make the trees robust to affinities whose raw values mislead
(design section 6), all off by default: ``affinity_norm`` rescales the
affinity before anything else (degree normalisation or attention-profile
cosine, :func:`normalize_affinity`), ``tolerance_scope='level'`` measures
the tolerance on each level's own candidate similarities, and
``tie_jitter`` breaks ties by seeded noise per node pair instead of by
pair id.

The batch is processed at once: node-by-node affinity sums live in one
``[B, K, K]`` tensor, the grid adjacency is one edge list shared by the
batch, and the only Python loops run over levels and matching rounds.
Parents sum their children's rows and columns by gathers in a fixed order
(no atomic adds), so trees are deterministic on every device.

Cost: asked for a fixed number of levels (``num_levels``, what mask
generation does), the shapes are static and nothing is read back to the
host, so a training step never waits for the device here. Without it,
levels are added until every tree is one node and the level count is read
on the host. On CPU, where a host read costs nothing, node and edge
dimensions shrink every level (``compact``).
"""
import math
from dataclasses import dataclass
from numbers import Integral
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

# Low 32 bits of a matching key hold the (inverted) node-pair id.
_PAIR_BITS = 32
_PAIR_MASK = (1 << _PAIR_BITS) - 1
# Two node ids must fit in those bits.
_MAX_PATCHES = 1 << (_PAIR_BITS // 2)
_NONE = torch.iinfo(torch.int64).min  # key of an edge that is not offered
# 31-bit integer hashing of the tie-breaking jitter (products stay < 2**63).
_MASK31 = (1 << 31) - 1
_HASH_MUL = 0x45D9F3B
_GOLDEN = 0x9E3779B1

AFFINITY_NORMS = ('none', 'degree', 'profile', 'centered_profile')
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
# Per-image statistics
# --------------------------------------------------------------------------
def offdiagonal_moments(affinity: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Finiteness, mean and spread of each image's off-diagonal affinities.

    Two reductions over the affinity, no elementwise temporaries, no host
    read.

    Args:
        affinity (Tensor): ``[B, N, N]`` float32.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: ``finite`` ``[B]`` bool (False where
        the affinity holds NaN or inf, or overflows float32 when summed),
        ``mean`` and ``std`` ``[B]`` float32, the mean and standard
        deviation of the off-diagonal entries (both 0 when ``N < 2``).
    """
    num = affinity.shape[1]
    total = affinity.sum((1, 2)).double()  # [B]
    total_sq = torch.linalg.vector_norm(affinity.flatten(1),
                                        dim=1).double().square()  # [B]
    finite = torch.isfinite(total) & torch.isfinite(total_sq)
    count = num * num - num
    if count < 2:
        zeros = affinity.new_zeros(affinity.shape[0])
        return finite, zeros, zeros
    diag = affinity.diagonal(dim1=1, dim2=2).double()  # [B, N]
    mean = (total - diag.sum(1)) / count
    var = (total_sq - diag.square().sum(1)) / count - mean.square()
    std = (var.clamp(min=0) * count / (count - 1)).sqrt()
    return finite, mean.float(), std.float()


def offdiagonal_stats(affinity: Tensor) -> Tuple[Tensor, Tensor]:
    """Finiteness and spread of each image's off-diagonal affinities.

    :func:`offdiagonal_moments` without the mean.

    Args:
        affinity (Tensor): ``[B, N, N]`` float32.

    Returns:
        Tuple[Tensor, Tensor]: ``finite`` ``[B]`` bool (False where the
        affinity holds NaN or inf, or overflows float32 when summed) and
        ``std`` ``[B]`` float32, the standard deviation of the off-diagonal
        entries (0 when ``N < 2``).
    """
    finite, _, std = offdiagonal_moments(affinity)
    return finite, std


# --------------------------------------------------------------------------
# Affinity normalisation (before the tree; static shapes, no host read)
# --------------------------------------------------------------------------
def _negative_shift(affinity: Tensor) -> Tensor:
    """``[B, 1, 1]``: an image's most negative entry, or 0 if there is none.

    Subtracting it makes the affinity non-negative; non-negative images
    (attention) get 0, i.e. are used as they are.
    """
    return affinity.amin((1, 2), keepdim=True).clamp(max=0)


def normalize_affinity(affinity: Tensor, mode: str = 'none') -> Tensor:
    """Rescale a patch affinity so that no token dominates by its scale.

    ``S`` below is the affinity made non-negative: an image with negative
    entries (e.g. the negative squared distances of the pipeline's cue
    affinity) is shifted up by its most negative entry; non-negative
    affinities such as attention are used as they are.

    * ``'none'``: the affinity itself (the same tensor, not shifted).
    * ``'degree'``: ``D^-1/2 S D^-1/2``, ``D`` the row sums of the
      symmetrised off-diagonal affinity, ``d_i = sum_{j != i} (S_ij +
      S_ji) / 2``; the diagonal is set to 0 (the tree never uses it). A
      token that every other token likes (an attention sink) has a large
      degree, so its affinities shrink by ``1 / sqrt(d_sink)``. Degrees
      below a floor (``1e-6`` of the image's mean degree, at least the
      smallest normal float32) are raised to it.
    * ``'profile'``: the cosine similarity of the tokens' affinity
      profiles, the rows of ``S`` (diagonal included): two tokens are
      similar when they attend to, and are attended by, the same tokens
      (for a symmetric affinity such as :func:`attention_affinity`'s). A
      sink is in every profile, so it adds to every pair alike, while its
      own profile (liked by all) resembles none.
    * ``'centered_profile'``: the same after subtracting the image's mean
      profile from every profile, so that what all tokens share (a sink's
      column, a uniform floor) no longer makes every pair look alike.

    Like the affinity itself, the result is symmetrised by the tree
    (:func:`build_hierarchy` uses ``(W_ij + W_ji) / 2``); it is symmetric
    (up to rounding) when the affinity is. Float32, vectorised over the
    batch, no host read; a few elementwise passes over ``[B, N, N]``, and
    for the profiles one batched ``[N, N] x [N, N]`` product.

    Args:
        affinity (Tensor): float32 ``[B, N, N]``.
        mode (str): ``'none'``, ``'degree'``, ``'profile'`` or
            ``'centered_profile'``. Defaults to 'none'.

    Returns:
        Tensor: float32 ``[B, N, N]``.
    """
    if mode not in AFFINITY_NORMS:
        raise ValueError(f'affinity_norm must be one of {AFFINITY_NORMS}, '
                         f'got {mode!r}')
    if mode == 'none':
        return affinity
    if mode == 'centered_profile':  # a constant shift cancels here
        rows = affinity - affinity.mean(1, keepdim=True)  # - mean profile
    else:
        shift = _negative_shift(affinity)  # [B, 1, 1]
        rows = affinity - shift
    if mode == 'degree':
        # the row and column sums of S, less its diagonal, in two reductions
        diag = rows.diagonal(dim1=1, dim2=2)  # [B, N]
        degree = (rows.sum(2) + rows.sum(1)) / 2 - diag  # [B, N]
        floor = (degree.mean(1, keepdim=True) * 1e-6).clamp(
            min=torch.finfo(degree.dtype).tiny)  # [B, 1]
        scale = torch.maximum(degree, floor).rsqrt()  # [B, N]
        rows.mul_(scale[:, :, None]).mul_(scale[:, None, :])
        rows.diagonal(dim1=1, dim2=2).zero_()
        return rows
    norm = torch.linalg.vector_norm(rows, dim=2, keepdim=True)  # [B, N, 1]
    rows.div_(norm.clamp(min=torch.finfo(rows.dtype).tiny))
    return rows @ rows.transpose(1, 2)


def nonfinite_images(affinity: Tensor) -> Tensor:
    """Flag the images whose affinity holds NaN or inf (one host read).

    A per-image sum screens the batch (NaN and inf propagate); only when it
    is not finite are the entries checked one by one, so that a finite
    affinity whose sum overflows is not flagged.

    Args:
        affinity (Tensor): The affinity ``[B, N, N]``.

    Returns:
        Tensor: BoolTensor ``[B]``, True where an entry is not finite.
    """
    suspect = ~torch.isfinite(affinity.sum((1, 2)))
    if not bool(suspect.any()):
        return suspect
    return ~torch.isfinite(affinity).flatten(1).all(dim=1)


def _raise_if_not_finite(affinity: Tensor, finite: Tensor) -> None:
    """Raise a ValueError naming the bad images (host reads)."""
    if bool(finite.all()):
        return
    bad = nonfinite_images(affinity)
    if bool(bad.any()):
        raise ValueError('affinity holds NaN or inf for images '
                         f'{bad.nonzero().flatten().tolist()}')
    raise ValueError('affinity is too large: its sums overflow float32 for '
                     f'images {(~finite).nonzero().flatten().tolist()}; '
                     'rescale it')


# --------------------------------------------------------------------------
# One level: match, then merge
# --------------------------------------------------------------------------
def grid_edges(h: int, w: int,
               device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """List the 4-adjacency of an ``h x w`` patch grid in both directions.

    Args:
        h (int): Grid rows.
        w (int): Grid columns.
        device (torch.device, optional): Where to put the result.
            Defaults to None.

    Returns:
        Tuple[Tensor, Tensor]: ``(src, dst)``, two LongTensors ``[2E]`` with
        ``E = h * (w - 1) + w * (h - 1)``.
    """
    index = torch.arange(h * w, device=device).view(h, w)
    src = torch.cat([index[:, :-1].reshape(-1), index[:-1, :].reshape(-1)])
    dst = torch.cat([index[:, 1:].reshape(-1), index[1:, :].reshape(-1)])
    return torch.cat([src, dst]), torch.cat([dst, src])


def _order_key(values: Tensor) -> Tensor:
    """Map float32 values to int64 keys with the same order.

    Args:
        values (Tensor): float32 tensor without NaN.

    Returns:
        Tensor: int64 tensor in ``[-2**31, 2**31)``, monotone in ``values``.
    """
    bits = values.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _proposal_key(sim: Tensor, low: Tensor, high: Tensor,
                  bits: int) -> Tensor:
    """One int64 key per edge, ordered as nodes prefer their partners.

    The order it encodes: higher similarity first; among equal
    similarities the pair with the smaller ``(low, high)`` node ids. The
    key is the same from both ends of a pair, so ties resolve alike from
    both sides and an image's best allowed pair is always a mutual
    proposal. Bit layout: the high 32 bits hold the similarity's
    order-preserving integer (:func:`_order_key`), the low 32 bits the
    inverted pair id ``(low << bits) | high`` (two node ids of ``bits``
    bits each; ``N <= 2**16``), read back by :func:`_proposal_pair`.

    Args:
        sim (Tensor): float32 ``[B, E]`` edge similarities, no NaN.
        low (Tensor): ``[B, E]`` the smaller node id of each edge.
        high (Tensor): ``[B, E]`` the larger node id.
        bits (int): Bits per node id.

    Returns:
        Tensor: int64 ``[B, E]``.
    """
    pair = (low << bits) | high
    return (_order_key(sim) << _PAIR_BITS) | (_PAIR_MASK - pair)


def _proposal_pair(key: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    """The ``(low, high)`` node ids of :func:`_proposal_key` keys."""
    pair = _PAIR_MASK - (key & _PAIR_MASK)
    return pair >> bits, pair & ((1 << bits) - 1)


def _hash31(x: Tensor) -> Tensor:
    """Mix int64 values in ``[0, 2**31)`` into ``[0, 2**31)``.

    A 31-bit variant of a well-known 32-bit integer hash (two
    xor-shift-multiply rounds); every product stays below ``2**58``.
    """
    x = (((x >> 16) ^ x) * _HASH_MUL) & _MASK31
    x = (((x >> 16) ^ x) * _HASH_MUL) & _MASK31
    return (x >> 16) ^ x


def _pair_noise(seed: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """A uniform value in ``[0, 1)`` per image and node pair.

    Args:
        seed (Tensor): ``[B, 1]`` int64 in ``[0, 2**31)``, the level's seed.
        low (Tensor): ``[B, E]`` the smaller node id of each edge.
        high (Tensor): ``[B, E]`` the larger node id.

    Returns:
        Tensor: float32 ``[B, E]``, the same for every edge of a pair.
    """
    mixed = _hash31(_hash31(seed ^ low) ^ high)
    return (mixed >> 7).float() * (1.0 / (1 << 24))


def _level_seed(seed: Tensor, level: int) -> Tensor:
    """The tie-breaking seed ``[B, 1]`` of one level from the tree's seed."""
    return _hash31(seed ^ ((level * _GOLDEN) & _MASK31))


def _edge_spread(sim: Tensor, valid: Tensor) -> Tensor:
    """Standard deviation of each image's candidate edge similarities.

    Args:
        sim (Tensor): ``[B, E]`` similarities (any value where not valid).
        valid (Tensor): ``[B, E]`` bool, the edges between two nodes.

    Returns:
        Tensor: float32 ``[B, 1]`` (0 with fewer than two valid edges).
    """
    weight = valid.to(sim.dtype)
    count = weight.sum(1, keepdim=True)  # [B, 1]
    values = sim.masked_fill(~valid, 0)
    mean = values.sum(1, keepdim=True) / count.clamp(min=1)
    dev = (values - mean) * weight
    var = dev.square().sum(1, keepdim=True) / (count - 1).clamp(min=1)
    return var.sqrt()


def _match(weights: Tensor,
           sizes: Tensor,
           u: Tensor,
           v: Tensor,
           margin: Tensor,
           rounds: int,
           level_spread: bool = False,
           jitter: Optional[Tensor] = None,
           seed: Optional[Tensor] = None) -> Tensor:
    """Pair adjacent nodes of one level by rounds of mutual proposals.

    Args:
        weights (Tensor): ``[B, K, K]`` summed affinity between nodes.
        sizes (Tensor): ``[B, K]`` node sizes (0 for unused slots).
        u (Tensor): ``[B, E]`` directed edge sources (node ids); every
            edge is listed in both directions.
        v (Tensor): ``[B, E]`` directed edge targets (node ids).
        margin (Tensor): ``[B, 1]`` the tolerated similarity loss, or with
            ``level_spread`` the tolerance in units of this level's spread.
        rounds (int): Matching rounds.
        level_spread (bool): Multiply ``margin`` by the standard deviation
            of this level's candidate similarities (:func:`_edge_spread`).
            Defaults to False.
        jitter (Tensor, optional): ``[B, 1]`` amplitude of the tie-breaking
            noise added to every pair's similarity; None adds none.
            Defaults to None.
        seed (Tensor, optional): ``[B, 1]`` int64, the level's noise seed
            (with ``jitter``). Defaults to None.

    Returns:
        Tensor: ``partner`` ``[B, K]``, the matched node, or the node itself
        when unmatched.
    """
    batch, num = sizes.shape
    low, high = torch.minimum(u, v), torch.maximum(u, v)  # [B, E]
    bits = max(1, (num - 1).bit_length())
    # Symmetric average linkage, summed in a fixed order so that the value
    # of a pair is bitwise the same in both directions.
    flat = weights.flatten(1)  # [B, K * K]
    sim = (flat.gather(1, low * num + high) + flat.gather(
        1, high * num + low)) / (
            2 * sizes.gather(1, low) * sizes.gather(1, high))  # [B, E]
    valid = u != v  # [B, E], False inside a node
    if level_spread:
        margin = margin * _edge_spread(sim, valid)
    if jitter is not None:
        # the same noise for every edge of a pair, in both directions;
        # pairs within the noise amplitude of a node's best count as ties
        sim = sim + jitter * _pair_noise(seed, low, high)
        margin = margin + jitter
    sim = sim.masked_fill(~valid, torch.finfo(sim.dtype).min)
    best = sim.new_full((batch, num), torch.finfo(sim.dtype).min)
    best = best.scatter_reduce(1, u, sim, 'amax')  # [B, K] best neighbour
    floor = best - margin  # [B, K]
    allowed = valid & (sim >= floor.gather(1, u)) & (sim >= floor.gather(1, v))
    key = _proposal_key(sim, low, high, bits).masked_fill(~allowed, _NONE)
    index = torch.arange(num, device=u.device).expand(batch, num)  # [B, K]
    partner = index
    for step in range(rounds):
        if step > 0:  # matched nodes make and take no more offers
            taken = partner != index  # [B, K]
            key = key.masked_fill(taken.gather(1, u) | taken.gather(1, v),
                                  _NONE)
        offer = key.new_full((batch, num), _NONE)
        offer = offer.scatter_reduce(1, u, key, 'amax')  # [B, K] best key
        low_id, high_id = _proposal_pair(offer, bits)
        offer_to = low_id + high_id - index  # [B, K] the other end
        mutual = (offer != _NONE) & (
            offer.gather(1, offer_to.clamp(0, num - 1)) == offer)
        partner = torch.where(mutual, offer_to, partner)
    return partner


def _merge(weights: Tensor, sizes: Tensor, partner: Tensor,
           compact: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Turn matched pairs into parents and sum their affinities.

    A parent's row is ``row(child_a) + row(child_b)``, then its column the
    same sum of the children's columns, always in this order, so that the
    result is deterministic on every device (no atomic adds).

    Args:
        weights (Tensor): ``[B, K, K]`` summed affinity between nodes.
        sizes (Tensor): ``[B, K]`` node sizes (0 for unused slots).
        partner (Tensor): ``[B, K]`` matched node or the node itself.
        compact (bool): Shrink ``K`` to the largest parent count (a host
            read).

    Returns:
        Tuple[Tensor, Tensor, Tensor, Tensor]: ``parent`` ``[B, K]`` (each
        node's parent id), parent ``weights`` ``[B, K', K']``, parent
        ``sizes`` ``[B, K']`` and parent counts ``[B]``.
    """
    batch, num = sizes.shape
    index = torch.arange(num, device=sizes.device).expand(batch, num)
    first = torch.minimum(index, partner)  # [B, K] smaller id of the pair
    is_root = (first == index) & (sizes > 0)  # [B, K] one per parent
    new_id = is_root.cumsum(1) - 1  # [B, K] parent id of each root
    parent = new_id.gather(1, first)  # [B, K]
    count = is_root.sum(1)  # [B]
    new_num = int(count.max()) if compact else num
    # The children of every parent; an unmatched node is its own parent's
    # both children, and its doubled sums are halved (exactly) below.
    slot = torch.where(is_root, new_id, new_num)  # [B, K], new_num = drop
    empty = index.new_zeros(batch, new_num + 1)
    child_a = empty.scatter(1, slot, index)[:, :new_num]  # [B, K']
    child_b = empty.scatter(1, slot, partner)[:, :new_num]  # [B, K']
    used = torch.arange(new_num, device=sizes.device) < count[:, None]
    scale = torch.where(child_a == child_b, 0.5, 1.0).to(weights.dtype)
    scale = scale.masked_fill(~used, 0)  # [B, K']
    offset = torch.arange(batch, device=sizes.device)[:, None] * num
    flat = weights.reshape(batch * num, num)
    rows = flat.index_select(0, (child_a + offset).flatten())
    rows += flat.index_select(0, (child_b + offset).flatten())
    rows = rows.view(batch, new_num, num)  # [B, K', K]
    rows *= scale[:, :, None]
    merged = rows.gather(2, child_a[:, None, :].expand(batch, new_num,
                                                       new_num))
    merged += rows.gather(2, child_b[:, None, :].expand(batch, new_num,
                                                        new_num))
    merged *= scale[:, None, :]  # [B, K', K']
    # sizes are small integers: their float sums are exact in any order
    sizes = sizes.new_zeros(batch, new_num).scatter_add_(1, parent, sizes)
    return parent, merged, sizes, count


def _compact_edges(u: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
    """Drop the edges inside a node, padding images to the longest list.

    Padding entries are ``(0, 0)``, i.e. internal, so they stay ignored.
    Reads the longest list length on the host (compact mode only).

    Args:
        u (Tensor): ``[B, E]`` edge sources (node ids).
        v (Tensor): ``[B, E]`` edge targets (node ids).

    Returns:
        Tuple[Tensor, Tensor]: ``u`` and ``v``, ``[B, E']``.
    """
    keep = u != v
    width = int(keep.sum(1).max())
    slot = torch.where(keep, keep.cumsum(1) - 1, width)
    out = []
    for ends in (u, v):
        buf = ends.new_zeros(ends.shape[0], width + 1)
        out.append(buf.scatter_(1, slot, ends)[:, :width])
    return out[0], out[1]


def _level(weights: Tensor,
           sizes: Tensor,
           u: Tensor,
           v: Tensor,
           node: Tensor,
           margin: Tensor,
           rounds: int,
           compact: bool,
           level_spread: bool = False,
           jitter: Optional[Tensor] = None,
           seed: Optional[Tensor] = None
           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One level up: match, merge, and relabel patches and edges.

    Args:
        weights (Tensor): ``[B, K, K]`` summed affinity between nodes.
        sizes (Tensor): ``[B, K]`` node sizes.
        u (Tensor): ``[B, E]`` edge sources.
        v (Tensor): ``[B, E]`` edge targets.
        node (Tensor): ``[B, N]`` each patch's node.
        margin (Tensor): ``[B, 1]`` the tolerated similarity loss (see
            :func:`_match` for ``level_spread``).
        rounds (int): Matching rounds.
        compact (bool): Shrink node and edge dimensions (host reads).
        level_spread (bool): Scale ``margin`` by this level's spread.
            Defaults to False.
        jitter (Tensor, optional): ``[B, 1]`` tie-breaking amplitude.
            Defaults to None.
        seed (Tensor, optional): ``[B, 1]`` the level's noise seed.
            Defaults to None.

    Returns:
        Tuple[Tensor, ...]: ``weights``, ``sizes``, ``u``, ``v``, ``node``
        of the new level and its node counts ``[B]``.
    """
    partner = _match(weights, sizes, u, v, margin, rounds, level_spread,
                     jitter, seed)
    parent, weights, sizes, count = _merge(weights, sizes, partner, compact)
    node = parent.gather(1, node)  # [B, N]
    u, v = parent.gather(1, u), parent.gather(1, v)  # [B, E]
    if compact:
        u, v = _compact_edges(u, v)
    return weights, sizes, u, v, node, count


_COMPILED = {}


def _compiled_level(device: torch.device):
    """``torch.compile`` of :func:`_level` for static shapes, per device.

    Inductor fuses a level's elementwise and gather work into a few
    (Triton, on CUDA) kernels. CUDA graphs (``mode='reduce-overhead'``) are
    not used: every level feeds the next one and the trees keep every
    level's output, which a graph replay would overwrite. Built on first
    use.
    """
    if device.type not in _COMPILED:
        _COMPILED[device.type] = torch.compile(
            _level, fullgraph=True, dynamic=False)
    return _COMPILED[device.type]


# --------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------
def _jitter_seeds(affinity: Tensor,
                  generator: Optional[torch.Generator]) -> Tensor:
    """Per-image seeds ``[B, 1]`` of the tie-breaking jitter.

    Drawn from ``generator`` when given (``B`` values of one
    ``torch.randint``); otherwise a hash of the image's affinity row sums,
    so that equal affinities get equal trees without touching any random
    state.

    Args:
        affinity (Tensor): float32 ``[B, N, N]``.
        generator (torch.Generator, optional): Random source.

    Returns:
        Tensor: int64 ``[B, 1]`` in ``[0, 2**31)``.
    """
    batch, num = affinity.shape[:2]
    if generator is not None:
        return torch.randint(0, 1 << 31, (batch, 1), generator=generator,
                             device=affinity.device)
    bits = affinity.sum(2).view(torch.int32).to(torch.int64)  # [B, N]
    index = torch.arange(num, device=affinity.device)
    mixed = _hash31((bits & _MASK31) ^ index).sum(1, keepdim=True)
    return _hash31((mixed ^ (mixed >> 31)) & _MASK31)


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
