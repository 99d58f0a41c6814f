# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""torch and faiss search give the same rankings."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ehm_mm.retrieval.search import (
    faiss_available,
    faiss_search,
    search,
    torch_search,
)


def _features(num, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num, dim, generator=gen), dim=1)


def test_faiss_is_installed():
    # faiss-cpu is a runtime requirement; the equality tests need it.
    assert faiss_available()


@pytest.mark.parametrize('topk', [None, 1, 7, 300])
def test_torch_and_faiss_agree(topk):
    queries, database = _features(17, 32, 0), _features(300, 32, 1)
    t_scores, t_idx = torch_search(queries, database, topk, chunk_size=5)
    f_scores, f_idx = faiss_search(queries, database, topk)
    k = 300 if topk is None else min(topk, 300)
    assert t_idx.shape == f_idx.shape == (17, k)
    assert t_idx.dtype == f_idx.dtype == torch.int64
    assert torch.equal(t_idx, f_idx)
    torch.testing.assert_close(t_scores, f_scores, rtol=0, atol=1e-5)
    # Sorted best first, and the brute-force answer.
    assert torch.all(t_scores[:, :-1] >= t_scores[:, 1:])
    expected = (queries @ database.t()).argsort(dim=1, descending=True)
    assert torch.equal(t_idx, expected[:, :k])


def test_ties_break_by_lower_index_on_both_paths():
    # Exactly representable values: dot products are exact in float32.
    database = torch.tensor([[0.5, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 1.0],
                             [1.0, 0.0]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 0.5]])
    expected = torch.tensor([[1, 4, 0, 2, 3], [3, 0, 1, 2, 4]])
    for backend in ('torch', 'faiss'):
        _, idx = search(queries, database, backend=backend)
        assert torch.equal(idx, expected), backend
        _, top = search(queries, database, topk=3, backend=backend)
        assert torch.equal(top, expected[:, :3]), backend


def test_auto_backend_and_errors():
    queries, database = _features(3, 8, 2), _features(20, 8, 3)
    _, auto_idx = search(queries, database, faiss_min_database_size=10)
    _, torch_idx = search(queries, database, backend='torch')
    assert torch.equal(auto_idx, torch_idx)
    with pytest.raises(ValueError, match='backend'):
        search(queries, database, backend='annoy')
    with pytest.raises(ValueError, match='feature dims differ'):
        search(queries, database[:, :4])
    with pytest.raises(ValueError, match='topk'):
        search(queries, database, topk=0)
    with pytest.raises(ValueError, match='empty'):
        search(queries, database[:0])


def _realistic(seed):
    """70 queries, 3000 database items, D = 768 (a ViT-B descriptor).

    Item 2000 onwards: 40 near-copies of query 0's best match whose scores
    differ by about float32 resolution, so float32 rounding alone orders
    them; placed at ranks ~80-120 of query 0 they straddle top-100.
    """
    gen = torch.Generator().manual_seed(seed)
    queries = F.normalize(torch.randn(70, 768, generator=gen), dim=1)
    database = F.normalize(torch.randn(3000, 768, generator=gen), dim=1)
    scores = database @ queries[0]
    anchor = database[scores.argsort(descending=True)[80]]
    noise = torch.randn(40, 768, generator=gen) * 2e-7
    database[2000:2040] = F.normalize(anchor[None] + noise, dim=1)
    return queries, database


@pytest.mark.parametrize('topk', [None, 100])
def test_backends_agree_at_a_realistic_size(topk):
    """Same ranking from both back ends: every index at every position.

    Float32 scores of near-ties differ with the summation order (faiss and
    torch sum differently); the float64 re-ranking makes them agree, in
    the order of the float64 scores, ties by index.
    """
    queries, database = _realistic(0)
    t_scores, t_idx = torch_search(queries, database, topk, chunk_size=16)
    f_scores, f_idx = faiss_search(queries, database, topk)
    k = 3000 if topk is None else topk
    assert t_idx.shape == f_idx.shape == (70, k)
    assert torch.equal(t_idx, f_idx)
    assert torch.equal(t_scores, f_scores)
    # The order is the float64 order (computed independently here).
    exact = queries.double() @ database.double().t()
    expected = torch.sort(exact, dim=1, descending=True, stable=True)
    torch.testing.assert_close(t_scores, expected.values[:, :k], rtol=0,
                               atol=1e-12)
    assert torch.equal(t_idx, expected.indices[:, :k])
    # The data is hard: float32 scores alone (torch's matrix product and
    # faiss's own) order the full rankings differently.
    import faiss
    index = faiss.IndexFlatIP(768)
    index.add(database.numpy())
    f32_scores, f32_idx = index.search(queries.numpy(), 3000)
    f32_idx = np.take_along_axis(
        f32_idx, np.lexsort((f32_idx, -f32_scores), axis=-1), axis=1)
    t32_idx = torch.sort(
        queries @ database.t(), dim=1, descending=True, stable=True).indices
    assert (t32_idx.numpy() != f32_idx).any(axis=1).sum() > 0
