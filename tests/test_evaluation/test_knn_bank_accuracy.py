# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from ehm_mm.evaluation.metrics import KNNBankAccuracy
from ehm_mm.evaluation.metrics.knn_bank_accuracy import knn_predict_bank


def _samples(features, labels, bank):
    return [dict(feature=f, gt_label=torch.tensor([y]), knn_bank=b)
            for f, y, b in zip(features, labels, bank)]


def test_queries_vote_only_with_the_bank():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    bank_labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_predict_bank(queries, bank, bank_labels, k=2).tolist() == [0, 1]
    with pytest.raises(ValueError, match='k must be'):
        knn_predict_bank(queries, bank, bank_labels, k=5)


def test_metric_separates_bank_and_queries():
    metric = KNNBankAccuracy(k=2)
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    # Query labels are the opposite of what their features say: a
    # leave-one-out k-NN over everything would let queries vote for each
    # other; with the bank only, every query is wrong.
    queries = torch.tensor([[1.0, 0.05], [0.95, 0.0], [0.05, 1.0]])
    metric.process({}, _samples(bank, [0, 0, 1, 1], [True] * 4))
    metric.process({}, _samples(queries, [1, 1, 0], [False] * 3))
    out = metric.compute_metrics(metric.results)
    assert out == dict(top1=0.0, num_queries=3, num_bank=4)


def test_missing_flag_or_empty_side_is_an_error():
    metric = KNNBankAccuracy(k=1)
    with pytest.raises(KeyError, match='knn_bank'):
        metric.process({}, [dict(feature=torch.ones(2),
                                 gt_label=torch.tensor([0]))])
    metric.process({}, _samples(torch.eye(2), [0, 1], [True, True]))
    with pytest.raises(ValueError, match='0 query samples'):
        metric.compute_metrics(metric.results)
