# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Affinity samples and tree checks shared by the masking tests."""
from typing import Callable, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from ehm_mm.models.masking.hierarchy import default_max_levels


def make_smooth_affinity(batch: int,
                         h: int,
                         w: int,
                         seed: int = 0,
                         channels: int = 16,
                         kernel: int = 5) -> Tensor:
    """Cosine similarities of a spatially smoothed random feature map.

    Args:
        batch (int): Images.
        h (int): Grid rows.
        w (int): Grid columns.
        seed (int): Random seed. Defaults to 0.
        channels (int): Feature channels. Defaults to 16.
        kernel (int): Box filter size, applied twice. Defaults to 5.

    Returns:
        Tensor: float32 ``[B, h * w, h * w]``.
    """
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(batch, channels, h, w, generator=gen)
    for _ in range(2):
        feat = F.avg_pool2d(
            feat, kernel, 1, kernel // 2, count_include_pad=False)
    feat = F.normalize(feat.flatten(2).transpose(1, 2), dim=-1)
    return feat @ feat.transpose(1, 2)


def make_quadrant_affinity(batch: int,
                           size: int = 14,
                           noise: float = 0.1,
                           seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Four high-affinity quadrants plus Gaussian noise.

    Args:
        batch (int): Images.
        size (int): The grid is ``size x size``. Defaults to 14.
        noise (float): Noise standard deviation. Defaults to 0.1.
        seed (int): Random seed. Defaults to 0.

    Returns:
        Tuple[Tensor, Tensor]: The affinity ``[B, N, N]`` (1 within a
        quadrant, 0 across, plus noise) and each patch's quadrant ``[N]``.
    """
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(size)
    half = index >= size // 2
    quadrant = (half[:, None].long() * 2 + half[None, :].long()).flatten()
    block = (quadrant[:, None] == quadrant[None, :]).float()
    num = size * size
    return block + noise * torch.randn(batch, num, num,
                                       generator=gen), quadrant


def _components(members: Tensor, h: int, w: int) -> int:
    """Count the 4-connected components of a set of grid patches."""
    cells = set(members.tolist())
    seen, count = set(), 0
    for start in cells:
        if start in seen:
            continue
        count += 1
        stack = [start]
        seen.add(start)
        while stack:
            cell = stack.pop()
            row, col = divmod(cell, w)
            for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                r, c = row + dr, col + dc
                nxt = r * w + c
                if 0 <= r < h and 0 <= c < w and nxt in cells \
                        and nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
    return count


def check_tree(hierarchy, max_levels: Optional[int] = None) -> None:
    """Assert every structural rule of a :class:`Hierarchy`.

    Level 0 is the identity; every level is a partition into nodes
    ``0 .. num_nodes - 1``; every level-(l+1) node is the union of one or
    two level-l nodes; every node is 4-connected; counts never grow; the
    last level has one node or the levels hit ``max_levels`` (None: the
    default cap).
    """
    ancestors, counts = hierarchy.ancestors, hierarchy.num_nodes
    batch, levels, num = ancestors.shape
    if max_levels is None:
        max_levels = default_max_levels(num)
    h, w = hierarchy.grid_size
    assert h * w == num
    assert ancestors.dtype == torch.long and counts.shape == (batch, levels)
    identity = torch.arange(num).expand(batch, num)
    assert torch.equal(ancestors[:, 0].cpu(), identity)
    assert bool((counts[:, 1:] <= counts[:, :-1]).all())
    for b in range(batch):
        for level in range(levels):
            ids = ancestors[b, level].cpu()
            count = int(counts[b, level])
            assert sorted(set(ids.tolist())) == list(range(count))
            for node in range(count):
                members = (ids == node).nonzero().flatten()
                assert _components(members, h, w) == 1, (b, level, node)
                if level > 0:
                    children = ancestors[b, level - 1].cpu()[members]
                    assert len(set(children.tolist())) in (1, 2)
            if level + 1 < levels:
                parents = ancestors[b, level + 1].cpu()
                # nesting: a node never straddles two parents
                for node in range(count):
                    assert len(set(parents[ids == node].tolist())) == 1
    # The last level exists because some image still had > 1 node before
    # it; it is a single node per image unless the levels hit the cap.
    if levels > 1:
        assert bool((counts[:, -2] > 1).any())
        if levels - 1 < max_levels:
            assert bool((counts[:, -1] == 1).all())


def count_quadrant_violations(tree, quadrant: Tensor) -> int:
    """Nodes spanning two quadrants without holding each of them whole.

    Args:
        tree (Hierarchy): The trees.
        quadrant (Tensor): ``[N]``, each patch's quadrant.

    Returns:
        int: The number of such nodes over all images and levels.
    """
    bad = 0
    for b in range(tree.batch_size):
        for level in range(tree.num_levels):
            ids = tree.level(level)[b]
            for node in range(int(tree.num_nodes[b, level])):
                inside = ids == node
                touched = quadrant[inside].unique()
                if len(touched) > 1:
                    bad += not all(
                        bool(inside[quadrant == q].all()) for q in touched)
    return bad


@pytest.fixture(scope='session')
def smooth_affinity() -> Callable[..., Tensor]:
    """Factory: ``smooth_affinity(batch, h, w, seed=0)``."""
    return make_smooth_affinity


@pytest.fixture(scope='session')
def quadrant_affinity() -> Callable[..., Tuple[Tensor, Tensor]]:
    """Factory: ``quadrant_affinity(batch, size=14, noise=0.1, seed=0)``."""
    return make_quadrant_affinity


@pytest.fixture(scope='session')
def tree_checker() -> Callable[..., None]:
    """``tree_checker(hierarchy, max_levels=None)`` asserts tree rules."""
    return check_tree


@pytest.fixture(scope='session')
def quadrant_violations() -> Callable[..., int]:
    """``quadrant_violations(tree, quadrant)``: nodes splitting a quadrant."""
    return count_quadrant_violations
