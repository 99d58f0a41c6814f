# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Nearest-neighbour search by inner product: exact torch or faiss.

Both back ends return the same ranking: for every query, database indices
sorted by decreasing float64 inner product, ties broken by the lower
database index. They find candidates in float32 (torch on the features'
device, or a faiss ``IndexFlatIP``): every item whose float32 score is within
twice the float32 rounding bound of the k-th float32 score. That set holds
the exact top-k whatever the summation order. The candidates are then
re-scored in float64 on the CPU by the same code on both paths and sorted,
so near-ties that float32 rounding orders differently on the two paths get
one order. A full ranking (``topk=None``) is scored in float64 directly.
With L2-normalised features the inner product is the cosine similarity.
"""
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

SEARCH_BACKENDS = ('auto', 'torch', 'faiss')
#: Most similarity scores the torch path holds (and sorts) at once.
MAX_CHUNK_ELEMENTS = 1 << 26


def faiss_available() -> bool:
    """Whether ``faiss`` (e.g. the ``faiss-cpu`` wheel) can be imported.

    Returns:
        bool: True when ``import faiss`` works.
    """
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _check_inputs(queries: Tensor, database: Tensor,
                  topk: Optional[int]) -> int:
    """Validate shapes and return the effective number of results."""
    if queries.dim() != 2 or database.dim() != 2:
        raise ValueError('queries and database must be 2-D (num, dim), got '
                         f'{tuple(queries.shape)} and {tuple(database.shape)}')
    if queries.size(1) != database.size(1):
        raise ValueError(f'feature dims differ: queries {queries.size(1)}, '
                         f'database {database.size(1)}')
    if database.size(0) == 0:
        raise ValueError('the database is empty')
    if topk is None:
        return database.size(0)
    if topk < 1:
        raise ValueError(f'topk must be >= 1 or None, got {topk}')
    return min(int(topk), database.size(0))


def _float32_error_bound(queries: Tensor, database: Tensor) -> Tensor:
    """Bound on |float32 dot product - exact| for every query, shape (Q,).

    Any summation order of a D-term float32 dot product errs by at most
    gamma_D * sum_i |q_i x_i| <= gamma_D * ||q|| * ||x|| with
    gamma_D = D u / (1 - D u), u = 2 ** -24 (2 ** -11 where CUDA matmuls
    may use TF32).
    """
    dim = queries.size(1)
    tf32 = database.is_cuda and torch.backends.cuda.matmul.allow_tf32
    unit = 2.0**-11 if tf32 else 2.0**-24
    gamma = dim * unit / (1 - dim * unit)
    max_norm = database.double().norm(dim=1).max()
    return gamma * queries.double().norm(dim=1) * max_norm


def _exact_scores(query: Tensor, database: Tensor,
                  candidates: Tensor) -> Tensor:
    """Float64 scores of ``candidates`` (C,) for one query, on the CPU.

    Each score is computed on its own row (an elementwise product summed
    over D), so it does not depend on which other candidates are present.
    """
    rows = database.index_select(0, candidates).double()  # [C, D]
    return (rows * query.double()[None]).sum(dim=1)  # [C]


def _exact_topk(query: Tensor, database: Tensor, candidates: Tensor,
                k: int) -> Tuple[Tensor, Tensor]:
    """Rank ``candidates`` by float64 score, then index; keep ``k``."""
    candidates = candidates.sort().values
    scores = _exact_scores(query, database, candidates)
    # A stable sort keeps equal scores in increasing index order.
    scores, order = torch.sort(scores, descending=True, stable=True)
    return scores[:k], candidates[order[:k]]


def _exact_full_ranking(queries: Tensor, database: Tensor,
                        chunk_size: int) -> Tuple[Tensor, Tensor]:
    """Rank the whole database in float64 on the CPU (both back ends)."""
    queries = queries.detach().cpu().double()
    database = database.detach().cpu().double()
    rows = max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // database.size(0)))
    all_scores, all_indices = [], []
    for start in range(0, queries.size(0), rows):
        similarity = queries[start:start + rows] @ database.t()  # [r, N]
        scores, indices = torch.sort(
            similarity, dim=1, descending=True, stable=True)
        all_scores.append(scores)
        all_indices.append(indices)
    if not all_scores:
        empty = database.new_zeros((0, database.size(0)))
        return empty, empty.long()
    return torch.cat(all_scores), torch.cat(all_indices)


def _stack_to(device: torch.device, scores: List[Tensor],
              indices: List[Tensor], k: int) -> Tuple[Tensor, Tensor]:
    if not scores:
        empty = torch.zeros((0, k), dtype=torch.float64)
        return empty.to(device), empty.long().to(device)
    return torch.stack(scores).to(device), torch.stack(indices).to(device)


def torch_search(queries: Tensor,
                 database: Tensor,
                 topk: Optional[int] = None,
                 chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """Exact inner-product search with torch.

    Candidates are found in float32 on the features' device and re-ranked
    in float64 on the CPU (see the module docstring).

    Args:
        queries (Tensor): Query features of shape (Q, D).
        database (Tensor): Database features of shape (N, D).
        topk (int, optional): Number of results per query; None ranks the
            whole database. Defaults to None.
        chunk_size (int): Most queries scored at once; fewer when the
            database is large, so that a chunk holds at most
            :data:`MAX_CHUNK_ELEMENTS` scores. Defaults to 1024.

    Returns:
        tuple[Tensor, Tensor]: Scores (Q, k, float64) and database indices
        (Q, k, int64) on the queries' device, best first, ties broken by the
        lower index.
    """
    k = _check_inputs(queries, database, topk)
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    if k == database.size(0):
        scores, indices = _exact_full_ranking(queries, database, chunk_size)
        return scores.to(queries.device), indices.to(queries.device)
    q32 = queries.detach().to(database.device, torch.float32)
    x32 = database.detach().float()
    margin = _float32_error_bound(q32, x32).to(x32.device)  # [Q]
    q_cpu, x_cpu = q32.cpu(), x32.cpu()
    rows = max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // database.size(0)))
    all_scores, all_indices = [], []
    for start in range(0, q32.size(0), rows):
        similarity = q32[start:start + rows] @ x32.t()  # [r, N]
        kth = similarity.topk(k, dim=1).values[:, -1]  # [r]
        floor = kth.double() - 2 * margin[start:start + rows]
        keep = similarity.double() >= floor[:, None]  # [r, N]
        for row, mask in enumerate(keep.cpu()):
            candidates = mask.nonzero().squeeze(1)
            scores, indices = _exact_topk(q_cpu[start + row], x_cpu,
                                          candidates, k)
            all_scores.append(scores)
            all_indices.append(indices)
    return _stack_to(queries.device, all_scores, all_indices, k)


def faiss_search(queries: Tensor,
                 database: Tensor,
                 topk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Exact inner-product search with a faiss ``IndexFlatIP`` (on CPU).

    Candidates come from faiss in float32 and are re-ranked in float64 by
    the same code as :func:`torch_search` (see the module docstring).

    Args:
        queries (Tensor): Query features of shape (Q, D).
        database (Tensor): Database features of shape (N, D).
        topk (int, optional): Number of results per query; None ranks the
            whole database. Defaults to None.

    Returns:
        tuple[Tensor, Tensor]: Scores (Q, k, float64) and database indices
        (Q, k, int64) on the queries' device, best first, ties broken by the
        lower index.
    """
    k = _check_inputs(queries, database, topk)
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "search backend 'faiss' needs the faiss package: "
            'pip install faiss-cpu') from error
    if k == database.size(0):
        scores, indices = _exact_full_ranking(queries, database, 1024)
        return scores.to(queries.device), indices.to(queries.device)
    x_cpu = database.detach().cpu().float()
    q_cpu = queries.detach().cpu().float()
    xb, xq = np.ascontiguousarray(x_cpu.numpy()), np.ascontiguousarray(
        q_cpu.numpy())
    margin = _float32_error_bound(q_cpu, x_cpu).numpy()  # [Q]
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    # A few more than k usually hold every candidate; otherwise a range
    # search fetches all items above the floor.
    fetched = min(2 * k + 16, xb.shape[0])
    scores32, indices32 = index.search(xq, fetched)
    all_scores, all_indices = [], []
    for row in range(xq.shape[0]):
        floor = float(scores32[row, k - 1]) - 2 * float(margin[row])
        if fetched == xb.shape[0] or float(scores32[row, -1]) < floor:
            candidates = indices32[row][scores32[row].astype(np.float64) >=
                                        floor]
        else:
            # range_search keeps scores > radius; step below the floor.
            radius = np.nextafter(np.float32(floor), np.float32(-np.inf))
            lims, row_scores, row_indices = index.range_search(
                xq[row:row + 1], float(radius))
            candidates = row_indices[lims[0]:lims[1]][
                row_scores[lims[0]:lims[1]].astype(np.float64) >= floor]
        scores, indices = _exact_topk(
            q_cpu[row], x_cpu, torch.from_numpy(candidates.astype(np.int64)),
            k)
        all_scores.append(scores)
        all_indices.append(indices)
    return _stack_to(queries.device, all_scores, all_indices, k)


def search(queries: Tensor,
           database: Tensor,
           topk: Optional[int] = None,
           backend: str = 'auto',
           faiss_min_database_size: int = 50000,
           chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """Rank the database for every query by inner product.

    Both backends return the same ranking (ties: the lower index first); the
    shapes are those of :func:`torch_search`.

    Args:
        queries (Tensor): Query features (Q, D).
        database (Tensor): Database features (N, D).
        topk (int, optional): Results per query, None for all. Defaults to
            None.
        backend (str): ``'torch'`` (exact, on the features' device),
            ``'faiss'`` (exact ``IndexFlatIP`` on CPU) or ``'auto'``: faiss
            when the database has at least ``faiss_min_database_size`` items
            and faiss is installed, torch otherwise. Defaults to ``'auto'``.
        faiss_min_database_size (int): Threshold of the ``'auto'`` choice.
            Defaults to 50000.
        chunk_size (int): Queries scored at once by the torch path.
            Defaults to 1024.

    Returns:
        tuple[Tensor, Tensor]: Scores (Q, k, float64) and database indices
        (Q, k, int64), best first, ties broken by the lower index; the same
        for both back ends.
    """
    if backend not in SEARCH_BACKENDS:
        raise ValueError(f'backend must be one of {SEARCH_BACKENDS}, '
                         f'got {backend!r}')
    if backend == 'auto':
        large = database.size(0) >= faiss_min_database_size
        backend = 'faiss' if large and faiss_available() else 'torch'
    if backend == 'faiss':
        return faiss_search(queries, database, topk)
    return torch_search(queries, database, topk, chunk_size)
