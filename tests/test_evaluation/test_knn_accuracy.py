# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Leave-one-out weighted k-NN accuracy."""
import pytest
import torch
from mmpretrain.registry import METRICS

import ehm_mm  # noqa: F401
from ehm_mm.evaluation.metrics.knn_accuracy import KNNAccuracy, knn_predict


def test_clustered_features_are_classified_perfectly():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=gen) * 5
    labels = torch.arange(3).repeat_interleave(10)
    feats = centers[labels] + 0.1 * torch.randn(30, 16, generator=gen)
    assert torch.equal(knn_predict(feats, labels, k=5), labels)


def test_a_sample_never_votes_for_itself():
    # Each point's only close neighbour has the other label.
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    pred = knn_predict(feats, labels, k=1)
    assert torch.equal(pred, torch.tensor([1, 0, 1, 0]))


def test_votes_are_weighted_by_similarity():
    # Neighbours of sample 0: one very close with label 1, two farther
    # with label 2; at a low temperature the close one wins.
    feats = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.6, 0.8],
                          [0.6, -0.8]])
    labels = torch.tensor([0, 1, 2, 2])
    assert int(knn_predict(feats, labels, k=3, temperature=0.01)[0]) == 1
    assert int(knn_predict(feats, labels, k=3, temperature=100.)[0]) == 2


def test_metric_reports_percent_and_lowers_k():
    metric = METRICS.build(dict(type='KNNAccuracy', k=20))
    assert isinstance(metric, KNNAccuracy)
    feats = torch.eye(4).repeat_interleave(2, dim=0)
    samples = [
        dict(feature=f, gt_label=torch.tensor([i // 2]))
        for i, f in enumerate(feats)
    ]
    metric.process({}, samples)
    # k falls to 7: each sample's twin weighs exp(1 / 0.07), far above the
    # other six, so every sample is right.
    assert metric.evaluate(8) == {'knn/top1': pytest.approx(100.0)}


def test_bad_input():
    with pytest.raises(ValueError, match='k must be'):
        KNNAccuracy(k=0)
    with pytest.raises(ValueError, match='temperature'):
        KNNAccuracy(temperature=0)
    with pytest.raises(ValueError, match='k must be in'):
        knn_predict(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 3)
    metric = KNNAccuracy()
    with pytest.raises(KeyError, match='feature'):
        metric.process({}, [dict(gt_label=torch.tensor([0]))])
    metric.process({}, [dict(feature=torch.ones(2), gt_label=0)])
    with pytest.raises(ValueError, match='at least 2'):
        metric.compute_metrics(metric.results)
