# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""RevisitedMAP, InstanceMAP and UKBenchScore on hand-built features."""
import math

import pytest
import torch
from mmpretrain.registry import METRICS

import ehm_mm.retrieval  # noqa: F401  (registers the benchmarks)


def _sample(feature, query_idx=-1, db_idx=-1, whiten_idx=-1, gt=None,
            block=None):
    sample = dict(
        retrieval_feature=torch.tensor(feature, dtype=torch.float32),
        query_idx=query_idx,
        db_idx=db_idx,
        whiten_idx=whiten_idx,
        img_path=f'q{query_idx}_d{db_idx}_w{whiten_idx}.jpg')
    if gt is not None:
        sample['retrieval_gt'] = gt
    if block is not None:
        sample['block'] = block
    return sample


def _evaluate(metric, samples, batch=3, **meta):
    metric.dataset_meta = dict(dataset_name='toy', **meta)
    for start in range(0, len(samples), batch):
        metric.process({}, samples[start:start + batch])
    return metric.evaluate(len(samples))


def _axis(i, dim=8):
    v = [0.0] * dim
    v[i] = 1.0
    return v


def _mix(weights, dim=8):
    v = [0.0] * dim
    for i, w in weights.items():
        v[i] = w
    return v


def test_revisited_map_by_hand():
    # Query 0 ranks the database [2, 1, 3, 0, ...] (decreasing cosine).
    database = [
        _sample(_mix({0: 0.1, 7: 1.0}), db_idx=0),
        _sample(_mix({0: 0.7, 1: 0.714}), db_idx=1),
        _sample(_axis(0), db_idx=2),
        _sample(_mix({0: 0.3, 2: 0.95}), db_idx=3),
        _sample(_axis(5), db_idx=4),
    ]
    queries = [
        _sample(_axis(0), query_idx=0,
                gt=dict(easy=[0], hard=[1], junk=[2])),
        # No hard positive: excluded from the Hard mean.
        _sample(_axis(5), query_idx=1,
                gt=dict(easy=[4], hard=[], junk=[])),
    ]
    metric = METRICS.build(dict(type='RevisitedMAP', prefix='toy'))
    out = _evaluate(metric, database + queries, num_queries=2,
                    num_database=5)
    # Hand-computed in test_ranking_metrics: E 0.25, M 19/24, H 1.
    assert out['toy/mAP_E'] == pytest.approx(100 * (0.25 + 1.0) / 2)
    assert out['toy/mAP_M'] == pytest.approx(100 * (19 / 24 + 1.0) / 2)
    assert out['toy/mAP_H'] == pytest.approx(100.0)
    assert out['toy/mP@1_E'] == pytest.approx(100 * (0 + 1) / 2)
    assert out['toy/mP@5_M'] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert out['toy/mP@10_H'] == pytest.approx(100.0)
    with pytest.raises(ValueError, match='topk'):
        METRICS.build(dict(type='RevisitedMAP', topk=10))


def test_ties_rank_the_lower_database_index_first():
    database = [
        _sample(_axis(0), db_idx=0),
        _sample(_axis(0), db_idx=1),  # same score as item 0
        _sample(_axis(1), db_idx=2),
    ]
    for positive, expected in ((1, 0.25), (0, 1.0)):
        query = _sample(_axis(0), query_idx=0,
                        gt=dict(positives=[positive], junk=[]))
        metric = METRICS.build(dict(type='InstanceMAP', prefix='t'))
        out = _evaluate(metric, database + [query])
        assert out['t/mAP'] == pytest.approx(100 * expected)


def test_instance_map_excludes_query_and_reports_blocks():
    # Holidays style: the query is database item 0 and its own junk.
    samples = [
        _sample(_axis(0), query_idx=0, db_idx=0,
                gt=dict(positives=[2], junk=[0]), block='a'),
        _sample(_mix({0: 0.9, 1: 0.44}), db_idx=1),
        _sample(_mix({0: 0.8, 1: 0.6}), db_idx=2),
        _sample(_axis(3), query_idx=1, db_idx=3,
                gt=dict(positives=[1], junk=[3]), block='b/1'),
    ]
    metric = METRICS.build(dict(type='InstanceMAP'))
    out = _evaluate(metric, samples, num_queries=2, num_database=4)
    # Query 0: without itself the ranking is [1, 2, ...]: AP (0 + 1/2) / 2.
    assert out['instance/mAP_a'] == pytest.approx(25.0)
    # Query 1: [3 (junk), 0/1/2 ...]; item 1 scores 0, like 0 and 2, so the
    # lower index 0 comes first: rank 1 -> AP 0.25.
    assert out['instance/mAP_b_1'] == pytest.approx(25.0)
    assert out['instance/mAP'] == pytest.approx(25.0)
    # topk cuts the ranking before scoring.
    metric = METRICS.build(dict(type='InstanceMAP', topk=2))
    out = _evaluate(metric, samples, num_queries=2, num_database=4)
    assert out['instance/mAP_b_1'] == 0.0


def test_whitening_and_role_checks():
    gen = torch.Generator().manual_seed(0)
    whiten = [
        _sample(torch.randn(8, generator=gen).tolist(), whiten_idx=i)
        for i in range(30)
    ]
    database = [_sample(_axis(i), db_idx=i) for i in range(4)]
    query = _sample(_mix({2: 1.0, 3: 0.1}), query_idx=0,
                    gt=dict(positives=[2], junk=[]))
    samples = database + [query] + whiten
    metric = METRICS.build(
        dict(type='InstanceMAP', whitening=dict(dim=6), prefix='w'))
    out = _evaluate(metric, samples, num_whitening=30)
    assert 0.0 <= out['w/mAP'] <= 100.0
    with pytest.raises(ValueError, match='whitening=None'):
        _evaluate(METRICS.build(dict(type='InstanceMAP')), samples)
    with pytest.raises(ValueError, match='no whitening images'):
        _evaluate(
            METRICS.build(dict(type='InstanceMAP', whitening=dict())),
            database + [query])
    with pytest.raises(ValueError, match='dataset has 5'):
        _evaluate(METRICS.build(dict(type='InstanceMAP')),
                  database + [query], num_database=5)
    with pytest.raises(ValueError, match=r'missing for indices \[1\]'):
        _evaluate(METRICS.build(dict(type='InstanceMAP')),
                  [database[0], database[2], query])
    bad = dict(query)
    bad.pop('retrieval_feature')
    with pytest.raises(KeyError, match='retrieval_feature'):
        METRICS.build(dict(type='InstanceMAP')).process({}, [bad])


def test_ukbench_score():
    # Two groups of four; image 3 (group 0) looks like group 1.
    feats = [
        _axis(0), _mix({0: 1, 1: 0.1}), _mix({0: 1, 2: 0.1}),
        _mix({4: 1, 0: 0.05}), _axis(4), _mix({4: 1, 5: 0.1}),
        _mix({4: 1, 6: 0.1}), _mix({4: 1, 7: 0.1})
    ]
    samples = [
        _sample(f, query_idx=i, db_idx=i,
                gt=dict(positives=list(range(i - i % 4, i - i % 4 + 4)),
                        junk=[])) for i, f in enumerate(feats)
    ]
    metric = METRICS.build(dict(type='UKBenchScore'))
    out = _evaluate(metric, samples)
    # Queries 0-2 find their 3 look-alikes, then image 3 (score 0.05);
    # query 3 finds itself, then 3 images of group 1; queries 4-7 find
    # image 3 among their top 4 instead of one of their own.
    assert out['ukbench/N-S'] == pytest.approx((3 * 4 + 1 + 4 * 3) / 8)
    assert out['ukbench/N-S_percent'] == pytest.approx(
        100 * out['ukbench/N-S'] / 4)
    assert not math.isnan(out['ukbench/N-S'])
    with pytest.raises(ValueError, match='topk'):
        METRICS.build(dict(type='UKBenchScore', topk=10))


def test_repeated_samples_from_padding_count_once():
    # Distributed samplers pad the last batch by repeating samples.
    database = [_sample(_axis(i), db_idx=i) for i in range(3)]
    query = _sample(_axis(1), query_idx=0, gt=dict(positives=[1], junk=[]))
    samples = database + [query, database[0], query]
    metric = METRICS.build(dict(type='InstanceMAP', prefix='p'))
    out = _evaluate(metric, samples, num_queries=1, num_database=3)
    assert out['p/mAP'] == pytest.approx(100.0)
