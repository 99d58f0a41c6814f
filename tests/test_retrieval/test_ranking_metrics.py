# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Hand-computed cases of the AP / precision / N-S core."""
import math

import numpy as np
import pytest

from ehm_mm.retrieval.metrics.ranking_metrics import (
    junk_free_positive_ranks,
    mean_average_precision,
    ns_score,
    precision_at_ks,
    query_average_precision,
    revisited_ground_truth,
    trapezoidal_average_precision,
)


def test_trapezoid_ap_by_hand():
    # Positives at ranks 0 and 2 out of 2: 1/2 * (1 + 1) / 2 for the first,
    # 1/2 * (1/2 + 2/3) / 2 for the second.
    assert trapezoidal_average_precision([0, 2], 2) == pytest.approx(19 / 24)
    assert trapezoidal_average_precision([0, 1, 2], 3) == pytest.approx(1.0)
    # First positive at rank 1: left height 0/1, right height 1/2.
    assert trapezoidal_average_precision([1], 1) == pytest.approx(0.25)
    # One of two positives never retrieved: only its own trapezoid counts.
    assert trapezoidal_average_precision([0], 2) == pytest.approx(0.5)
    assert trapezoidal_average_precision([], 3) == 0.0


@pytest.mark.parametrize('ranks, num', [([2, 1], 2), ([0, 0], 2),
                                        ([0, 1, 2], 2), ([-1], 1)])
def test_trapezoid_ap_rejects_bad_ranks(ranks, num):
    with pytest.raises(ValueError):
        trapezoidal_average_precision(ranks, num)
    with pytest.raises(ValueError, match='num_positives'):
        trapezoidal_average_precision([], 0)


def test_junk_is_removed_from_the_ranking():
    # Junk 7 sits above positive 0 and is taken out: [1, 0, 4].
    ranks = junk_free_positive_ranks([1, 7, 0, 4], positives=[0, 4],
                                     junk=[7])
    assert ranks.tolist() == [1, 2]
    ap, prs = query_average_precision([1, 7, 0, 4], [0, 4], [7],
                                      ks=(1, 5, 10))
    assert ap == pytest.approx((0 + 1 / 2) / 4 + (1 / 2 + 2 / 3) / 4)
    # 1-based ranks [2, 3]: P@1 = 0/1, P@5 and P@10 cut at max rank 3.
    assert prs.tolist() == pytest.approx([0.0, 2 / 3, 2 / 3])
    # Junk at the top only: the positives become perfect.
    ap, _ = query_average_precision([5, 3, 0, 2, 9], [0, 2], [5, 3])
    assert ap == pytest.approx(1.0)
    # The same ranking without junk handling is worse.
    ap_no_junk, _ = query_average_precision([5, 3, 0, 2, 9], [0, 2])
    assert ap_no_junk < 0.5


def test_positive_and_junk_must_be_disjoint():
    with pytest.raises(ValueError, match='both positive and junk'):
        junk_free_positive_ranks([0, 1], positives=[0], junk=[0])
    with pytest.raises(ValueError, match='duplicate'):
        query_average_precision([0, 1], positives=[1, 1])


def test_precision_at_k_revisitop_cutoff():
    # Two positives ranked first: P@10 is 2/2, not 2/10.
    assert precision_at_ks([0, 1], (1, 5, 10)).tolist() == [1.0, 1.0, 1.0]
    assert precision_at_ks([], (1, 5)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        precision_at_ks([0], (0, ))


def test_query_without_positives_is_excluded():
    rankings = np.array([[0, 1, 2], [2, 1, 0]])
    gts = [dict(positives=[2], junk=[]), dict(positives=[], junk=[1])]
    result = mean_average_precision(rankings, gts, ks=(1, ))
    assert math.isnan(result['aps'][1])
    assert result['num_evaluated'] == 1
    # Query 0: positive at rank 2 -> (1/2 * ... ) = (0/2 + 1/3) / 2.
    assert result['mAP'] == pytest.approx((0 + 1 / 3) / 2)
    assert result['mP'].tolist() == pytest.approx([0.0])
    none = mean_average_precision(rankings[1:], gts[1:])
    assert math.isnan(none['mAP']) and none['num_evaluated'] == 0


def test_revisited_setups_by_hand():
    gnd = dict(easy=[0], hard=[1], junk=[2])
    ranking = [2, 1, 3, 0]
    easy = revisited_ground_truth(gnd, 'easy')
    assert easy == dict(positives=[0], junk=[2, 1])
    medium = revisited_ground_truth(gnd, 'medium')
    assert medium == dict(positives=[0, 1], junk=[2])
    hard = revisited_ground_truth(gnd, 'hard')
    assert hard == dict(positives=[1], junk=[2, 0])
    # Easy: junk-free ranking [3, 0] -> positive at rank 1.
    ap, prs = query_average_precision(ranking, ks=(1, 5), **easy)
    assert ap == pytest.approx(0.25)
    assert prs.tolist() == pytest.approx([0.0, 0.5])
    # Medium: [1, 3, 0] -> positives at ranks 0 and 2.
    ap, prs = query_average_precision(ranking, ks=(1, 5), **medium)
    assert ap == pytest.approx(19 / 24)
    assert prs.tolist() == pytest.approx([1.0, 2 / 3])
    # Hard: [1, 3] -> positive first.
    ap, prs = query_average_precision(ranking, ks=(1, 5), **hard)
    assert ap == pytest.approx(1.0)
    assert prs.tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match='setup'):
        revisited_ground_truth(gnd, 'medium-hard')
    with pytest.raises(ValueError, match="lacks 'hard'"):
        revisited_ground_truth(dict(easy=[0], junk=[]), 'hard')


def _reference_map(ranks, gnd, kappas):
    """Loop-by-loop transcription of revisitop's compute_map, for checking.

    ranks: (db, nq) as in revisitop (one column per query).
    """
    aps, prs, used = [], [], 0
    for i, g in enumerate(gnd):
        ok, junk = np.asarray(g['positives']), np.asarray(g['junk'])
        if ok.size == 0:
            continue
        used += 1
        column = ranks[:, i]
        pos = [r for r in range(len(column)) if column[r] in ok]
        jnk = [r for r in range(len(column)) if column[r] in junk]
        shifted = []
        for p in pos:
            shifted.append(p - sum(1 for j in jnk if j < p))
        ap = 0.0
        for j, r in enumerate(shifted):
            left = 1.0 if r == 0 else j / r
            right = (j + 1) / (r + 1)
            ap += (left + right) / 2 / len(ok)
        aps.append(ap)
        one_based = np.array(shifted) + 1
        row = []
        for k in kappas:
            kq = min(one_based.max(), k)
            row.append((one_based <= kq).sum() / kq)
        prs.append(row)
    return np.mean(aps), np.mean(prs, axis=0)


def test_matches_a_loop_transcription_on_random_rankings():
    rng = np.random.default_rng(0)
    num_db, num_q = 40, 12
    rankings = np.stack([rng.permutation(num_db) for _ in range(num_q)])
    gnd = []
    for _ in range(num_q):
        ids = rng.permutation(num_db)
        gnd.append(
            dict(
                easy=ids[:3].tolist(),
                hard=ids[3:3 + rng.integers(0, 4)].tolist(),
                junk=ids[8:8 + rng.integers(0, 5)].tolist()))
    for setup in ('easy', 'medium', 'hard'):
        gts = [revisited_ground_truth(g, setup) for g in gnd]
        ours = mean_average_precision(rankings, gts, ks=(1, 5, 10))
        ref_map, ref_mp = _reference_map(rankings.T, gts, (1, 5, 10))
        assert ours['mAP'] == pytest.approx(ref_map)
        assert ours['mP'] == pytest.approx(ref_mp)


def test_ns_score():
    groups = [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]]
    rankings = [[0, 1, 2, 3, 4], [1, 4, 0, 5, 2], [4, 5, 6, 7, 0]]
    score, counts = ns_score(rankings, groups)
    assert counts.tolist() == [4, 2, 4]
    assert score == pytest.approx(10 / 3)
    with pytest.raises(ValueError, match='fewer than top'):
        ns_score([[0, 1]], [[0, 1, 2, 3]])
