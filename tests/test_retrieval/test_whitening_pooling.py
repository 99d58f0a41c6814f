# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""PCA whitening and token pooling."""
import pytest
import torch

from ehm_mm.retrieval.descriptors.pooling import (
    gem_pool,
    parse_pooling,
    pool_tokens,
)
from ehm_mm.retrieval.whitening import PCAWhitening


def test_whitening_gives_identity_covariance():
    gen = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=gen)
    learn = torch.randn(500, 6, generator=gen) @ mixing + 3.0
    pca = PCAWhitening().fit(learn)
    out = pca.transform(learn)
    centred = out - out.mean(dim=0)
    covariance = centred.t() @ centred / len(out)
    torch.testing.assert_close(covariance, torch.eye(6), atol=1e-4,
                               rtol=0)
    # Components are sorted by decreasing variance before whitening.
    plain = PCAWhitening(power=0.0).fit(learn).transform(learn)
    variances = plain.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:])


def test_whitening_reduces_dimension_and_validates():
    learn = torch.randn(50, 8)
    pca = PCAWhitening(dim=3).fit(learn)
    assert pca.transform(torch.randn(4, 8)).shape == (4, 3)
    with pytest.raises(RuntimeError, match='before fit'):
        PCAWhitening().transform(learn)
    with pytest.raises(ValueError, match='exceeds'):
        PCAWhitening(dim=9).fit(learn)
    with pytest.raises(ValueError, match='at least 2'):
        PCAWhitening().fit(learn[:1])
    with pytest.raises(ValueError, match='shape'):
        pca.transform(torch.randn(4, 7))
    with pytest.raises(ValueError, match='power'):
        PCAWhitening(power=-1)


def test_pooling_methods():
    cls = torch.tensor([[9.0, -9.0]])
    patches = torch.tensor([[[1.0, -2.0], [3.0, 2.0]]])
    tokens = torch.cat([cls[:, None], patches], dim=1)  # (1, 3, 2)
    assert pool_tokens(tokens, ['cls']).tolist() == [[9.0, -9.0]]
    assert pool_tokens(tokens, ['avg']).tolist() == [[2.0, 0.0]]
    gem = pool_tokens(tokens, ['gem'], gem_p=2.0)
    # Negative tokens are clamped to 1e-6 before the power mean.
    expected = torch.tensor([[(5.0)**0.5, (2.0)**0.5]])
    torch.testing.assert_close(gem, expected)
    both = pool_tokens(tokens, parse_pooling('cls+avg'))
    assert both.tolist() == [[9.0, -9.0, 2.0, 0.0]]
    # GeM with p=1 on positive tokens is the mean.
    positive = torch.rand(2, 5, 3) + 0.1
    torch.testing.assert_close(gem_pool(positive, 1.0), positive.mean(1))


def test_pooling_spec_errors():
    assert parse_pooling(['gem', 'cls']) == ('gem', 'cls')
    with pytest.raises(ValueError, match='unknown pooling'):
        parse_pooling('max')
    with pytest.raises(ValueError, match='twice'):
        parse_pooling('cls+cls')
    with pytest.raises(ValueError, match='CLS'):
        pool_tokens(torch.zeros(1, 4, 2), ['cls'], num_extra_tokens=0)
    with pytest.raises(ValueError, match='no patch token'):
        pool_tokens(torch.zeros(1, 1, 2), ['avg'])
