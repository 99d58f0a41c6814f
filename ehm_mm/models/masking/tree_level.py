# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""One level of the tree builder: match adjacent nodes, then merge them.

Design section 2. Going up one level, every node proposes its most similar
free neighbour (average linkage, symmetrised), mutual proposals are
matched, for ``rounds`` rounds (:func:`_match`); each matched pair becomes
one parent, whose affinity rows and columns are its children's, summed by
gathers in a fixed order, so the result is the same on every device
(:func:`_merge`). Static shapes unless ``compact``; ``torch.compile`` runs
a whole level (:func:`_compiled_level`).
"""
from typing import Optional, Tuple

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
