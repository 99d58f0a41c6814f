# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Nearest-neighbour search by inner product: exact torch or faiss.

Both back ends return the same thing: for every query, database indices
sorted by decreasing score, ties broken by the lower database index, so the
ranking (and every metric computed from it) does not depend on the back end.
With L2-normalised features the inner product is the cosine similarity.
"""
from typing import Optional, Tuple

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


def torch_search(queries: Tensor,
                 database: Tensor,
                 topk: Optional[int] = None,
                 chunk_size: int = 1024) -> Tuple[Tensor, Tensor]:
    """Exact inner-product search with torch, on the features' device.

    Args:
        queries (Tensor): Query features of shape (Q, D).
        database (Tensor): Database features of shape (N, D).
        topk (int, optional): Number of results per query; None ranks the
            whole database. Defaults to None.
        chunk_size (int): Most queries scored at once; fewer when the
            database is large, so that a chunk holds at most
            :data:`MAX_CHUNK_ELEMENTS` scores. Defaults to 1024.

    Returns:
        tuple[Tensor, Tensor]: Scores (Q, k) and database indices (Q, k,
        int64), best first, ties broken by the lower index.
    """
    k = _check_inputs(queries, database, topk)
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
    queries = queries.to(database.dtype)
    rows = max(1, min(chunk_size, MAX_CHUNK_ELEMENTS // database.size(0)))
    all_scores, all_indices = [], []
    for start in range(0, queries.size(0), rows):
        similarity = queries[start:start + rows] @ database.t()
        # A stable sort keeps equal scores in database order.
        scores, indices = torch.sort(
            similarity, dim=1, descending=True, stable=True)
        all_scores.append(scores[:, :k])
        all_indices.append(indices[:, :k])
    if not all_scores:
        empty = database.new_zeros((0, k))
        return empty, empty.long()
    return torch.cat(all_scores), torch.cat(all_indices)


def _sort_ties_by_index(scores: np.ndarray,
                        indices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sort each row by decreasing score, then increasing index."""
    order = np.lexsort((indices, -scores), axis=-1)
    return (np.take_along_axis(scores, order, axis=1),
            np.take_along_axis(indices, order, axis=1))


def faiss_search(queries: Tensor,
                 database: Tensor,
                 topk: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Exact inner-product search with a faiss ``IndexFlatIP`` (on CPU).

    Args:
        queries (Tensor): Query features of shape (Q, D).
        database (Tensor): Database features of shape (N, D).
        topk (int, optional): Number of results per query; None ranks the
            whole database. Defaults to None.

    Returns:
        tuple[Tensor, Tensor]: Scores (Q, k, float32) and database indices
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
    xb = np.ascontiguousarray(
        database.detach().cpu().numpy().astype(np.float32))
    xq = np.ascontiguousarray(
        queries.detach().cpu().numpy().astype(np.float32))
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    # One extra result shows whether equal scores straddle the cut-off.
    scores, indices = index.search(xq, min(k + 1, xb.shape[0]))
    scores, indices = _sort_ties_by_index(scores, indices)
    if scores.shape[1] > k:
        for row in np.flatnonzero(scores[:, k - 1] == scores[:, k]):
            # faiss picked an arbitrary subset of the tied items: fetch all
            # items scoring at least the k-th score and re-sort them.
            radius = np.nextafter(scores[row, k - 1], np.float32(-np.inf))
            lims, row_scores, row_indices = index.range_search(
                xq[row:row + 1], float(radius))
            row_scores, row_indices = _sort_ties_by_index(
                row_scores[None, lims[0]:lims[1]],
                row_indices[None, lims[0]:lims[1]])
            scores[row, :k] = row_scores[0, :k]
            indices[row, :k] = row_indices[0, :k]
        scores, indices = scores[:, :k], indices[:, :k]
    device = queries.device
    return (torch.from_numpy(scores).to(device),
            torch.from_numpy(indices.astype(np.int64)).to(device))


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
        tuple[Tensor, Tensor]: Scores (Q, k) and database indices (Q, k,
        int64), best first, ties broken by the lower index.
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
