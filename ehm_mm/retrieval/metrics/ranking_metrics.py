# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Scores of ranked retrieval lists (numpy only, no OpenMMLab glue).

Conventions shared by every function here:

- A *ranking* is a 1-D integer array of database indices, best match first.
  It may be truncated (top-k); database items missing from it count as never
  retrieved.
- *Positives* are the database indices that count as correct; *junk* are the
  indices to ignore: they are removed from the ranking before scoring, so a
  junk item neither helps nor hurts (the revisited Oxford/Paris convention;
  the query itself, when it is part of the database, is junk for its own
  ranking).
- Average precision is the *trapezoidal* area under the precision-recall
  curve, as computed by the INRIA Holidays evaluation package and by the
  revisited Oxford/Paris ``compute_ap``. For the ``j``-th retrieved positive
  (0-based) at 0-based junk-free rank ``r``, the trapezoid has width
  ``1 / num_positives`` and heights ``j / r`` (``1`` when ``r == 0``) and
  ``(j + 1) / (r + 1)``.
"""
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

#: The three setups of the revisited Oxford/Paris protocol (Radenovic et al.,
#: CVPR 2018): for each, which ground-truth lists are positives and which are
#: ignored (junk). Anything not listed is a negative.
REVISITED_SETUPS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    'easy': dict(positives=('easy', ), junk=('junk', 'hard')),
    'medium': dict(positives=('easy', 'hard'), junk=('junk', )),
    'hard': dict(positives=('hard', ), junk=('junk', 'easy')),
}


def _as_index_array(values: Sequence[int], name: str) -> np.ndarray:
    """Convert a list of database indices to a unique 1-D int64 array."""
    array = np.asarray(values, dtype=np.int64).reshape(-1)
    if array.size != np.unique(array).size:
        raise ValueError(f'{name} contains duplicate database indices: '
                         f'{array.tolist()}')
    return array


def trapezoidal_average_precision(positive_ranks: Sequence[int],
                                  num_positives: int) -> float:
    """Trapezoidal average precision from the ranks of retrieved positives.

    Args:
        positive_ranks (Sequence[int]): 0-based ranks of the retrieved
            positives in a junk-free ranking, strictly increasing. Positives
            that were not retrieved are simply absent.
        num_positives (int): Total number of positives of the query (the
            recall denominator). Must be positive.

    Returns:
        float: Average precision in ``[0, 1]``.
    """
    ranks = np.asarray(positive_ranks, dtype=np.float64).reshape(-1)
    if num_positives <= 0:
        raise ValueError(
            f'num_positives must be positive, got {num_positives}')
    if ranks.size > num_positives:
        raise ValueError(f'{ranks.size} positive ranks given for only '
                         f'{num_positives} positives')
    if ranks.size and (ranks[0] < 0 or np.any(np.diff(ranks) <= 0)):
        raise ValueError('positive_ranks must be non-negative and strictly '
                         f'increasing, got {ranks.tolist()}')
    num_before = np.arange(ranks.size, dtype=np.float64)
    precision_left = np.where(ranks == 0, 1.0,
                              num_before / np.maximum(ranks, 1.0))
    precision_right = (num_before + 1.0) / (ranks + 1.0)
    area = (precision_left + precision_right) / 2.0
    return float(area.sum() / num_positives)


def junk_free_positive_ranks(ranking: Sequence[int],
                             positives: Sequence[int],
                             junk: Sequence[int] = ()) -> np.ndarray:
    """0-based ranks of the positives after junk is taken out of a ranking.

    Each positive moves up by the number of junk items ranked above it, which
    is what deleting the junk entries from the ranking does.

    Args:
        ranking (Sequence[int]): Database indices, best first.
        positives (Sequence[int]): Database indices of the positives.
        junk (Sequence[int]): Database indices to ignore. Defaults to ().

    Returns:
        np.ndarray: Strictly increasing int64 ranks, one per retrieved
        positive.
    """
    ranking = np.asarray(ranking, dtype=np.int64).reshape(-1)
    positives = _as_index_array(positives, 'positives')
    junk = _as_index_array(junk, 'junk')
    overlap = np.intersect1d(positives, junk)
    if overlap.size:
        raise ValueError('an index cannot be both positive and junk: '
                         f'{overlap.tolist()}')
    is_positive = np.isin(ranking, positives)
    is_junk = np.isin(ranking, junk)
    positions = np.flatnonzero(is_positive)
    junk_above = np.cumsum(is_junk)[positions] if positions.size else \
        np.zeros(0, dtype=np.int64)
    return positions - junk_above


def precision_at_ks(positive_ranks: Sequence[int],
                    ks: Sequence[int]) -> np.ndarray:
    """Precision at each k, as defined by the revisited Oxford/Paris code.

    With 1-based ranks ``p`` of the retrieved positives, the cut-off is
    ``kq = min(max(p), k)`` and the precision is ``#(p <= kq) / kq``: a query
    whose positives are all ranked first is not penalised for having fewer
    than ``k`` of them. A query with no retrieved positive scores 0.

    Args:
        positive_ranks (Sequence[int]): 0-based junk-free ranks of the
            retrieved positives.
        ks (Sequence[int]): Cut-offs, each >= 1.

    Returns:
        np.ndarray: float64 precisions, one per k.
    """
    ranks = np.asarray(positive_ranks, dtype=np.int64).reshape(-1) + 1
    out = np.zeros(len(ks), dtype=np.float64)
    for i, k in enumerate(ks):
        if int(k) < 1:
            raise ValueError(f'precision cut-offs must be >= 1, got {k}')
        if ranks.size == 0:
            continue
        kq = min(int(ranks.max()), int(k))
        out[i] = np.count_nonzero(ranks <= kq) / kq
    return out


def query_average_precision(
        ranking: Sequence[int],
        positives: Sequence[int],
        junk: Sequence[int] = (),
        ks: Sequence[int] = ()) -> Tuple[float, np.ndarray]:
    """Average precision and precision@k of one query.

    Args:
        ranking (Sequence[int]): Database indices, best first.
        positives (Sequence[int]): Database indices of the positives.
        junk (Sequence[int]): Database indices removed from the ranking.
            Defaults to ().
        ks (Sequence[int]): Cut-offs for precision@k. Defaults to ().

    Returns:
        tuple[float, np.ndarray]: The AP and the precisions at ``ks``; both
        are NaN when the query has no positive (such a query is excluded from
        the mean by :func:`mean_average_precision`).
    """
    positives = _as_index_array(positives, 'positives')
    if positives.size == 0:
        return float('nan'), np.full(len(ks), np.nan)
    ranks = junk_free_positive_ranks(ranking, positives, junk)
    ap = trapezoidal_average_precision(ranks, positives.size)
    return ap, precision_at_ks(ranks, ks)


def mean_average_precision(
        rankings: Sequence[Sequence[int]],
        ground_truth: Sequence[Mapping[str, Sequence[int]]],
        ks: Sequence[int] = ()) -> Dict[str, object]:
    """Mean AP and mean precision@k over queries (revisitop ``compute_map``).

    Args:
        rankings (Sequence[Sequence[int]]): One ranking per query (e.g. an
            array of shape (num_queries, num_ranked)).
        ground_truth (Sequence[Mapping]): One dict per query with
            ``'positives'`` and optionally ``'junk'`` index lists.
        ks (Sequence[int]): Cut-offs for precision@k. Defaults to ().

    Returns:
        dict: ``mAP`` (float, NaN when no query has a positive), ``mP``
        (np.ndarray, mean precision at each k), ``aps`` (np.ndarray, per
        query, NaN for excluded queries), ``precisions`` (np.ndarray of shape
        (num_queries, len(ks))) and ``num_evaluated`` (int, the queries with
        at least one positive).
    """
    if len(rankings) != len(ground_truth):
        raise ValueError(f'{len(rankings)} rankings but {len(ground_truth)} '
                         'ground-truth entries')
    aps = np.full(len(rankings), np.nan)
    precisions = np.full((len(rankings), len(ks)), np.nan)
    for i, (ranking, gt) in enumerate(zip(rankings, ground_truth)):
        if 'positives' not in gt:
            raise ValueError(f'ground truth of query {i} has no '
                             "'positives' list")
        aps[i], precisions[i] = query_average_precision(
            ranking, gt['positives'], gt.get('junk', ()), ks)
    valid = ~np.isnan(aps)
    num_evaluated = int(valid.sum())
    if num_evaluated:
        mean_ap = float(aps[valid].mean())
        mean_precisions = precisions[valid].mean(axis=0)
    else:
        mean_ap = float('nan')
        mean_precisions = np.full(len(ks), np.nan)
    return dict(
        mAP=mean_ap,
        mP=mean_precisions,
        aps=aps,
        precisions=precisions,
        num_evaluated=num_evaluated)


def revisited_ground_truth(gnd: Mapping[str, Sequence[int]],
                           setup: str) -> Dict[str, List[int]]:
    """Positives and junk of one revisited Oxford/Paris query for a setup.

    Args:
        gnd (Mapping[str, Sequence[int]]): The query's ``easy``, ``hard`` and
            ``junk`` database index lists (as in ``gnd_roxford5k.pkl``).
        setup (str): ``'easy'``, ``'medium'`` or ``'hard'``.

    Returns:
        dict: ``positives`` and ``junk`` index lists.
    """
    if setup not in REVISITED_SETUPS:
        raise ValueError(f'setup must be one of {list(REVISITED_SETUPS)}, '
                         f'got {setup!r}')
    out = {}
    for role, keys in REVISITED_SETUPS[setup].items():
        indices: List[int] = []
        for key in keys:
            if key not in gnd:
                raise ValueError(f"revisited ground truth lacks '{key}'")
            indices.extend(int(i) for i in np.asarray(gnd[key]).reshape(-1))
        out[role] = indices
    return out


def ns_score(rankings: Sequence[Sequence[int]],
             groups: Sequence[Sequence[int]],
             top: int = 4) -> Tuple[float, np.ndarray]:
    """UKBench N-S score: group members found in the top ``top`` results.

    For every query, count how many database images of its group (the query
    itself included, as it is part of the database) are among the first
    ``top`` results; the score is the mean count (maximum ``top`` for groups
    of ``top`` images).

    Args:
        rankings (Sequence[Sequence[int]]): One ranking per query with at
            least ``top`` entries.
        groups (Sequence[Sequence[int]]): Per query, the database indices of
            its group.
        top (int): The cut-off. Defaults to 4.

    Returns:
        tuple[float, np.ndarray]: The mean score and the per-query counts.
    """
    if len(rankings) != len(groups):
        raise ValueError(
            f'{len(rankings)} rankings but {len(groups)} groups')
    counts = np.zeros(len(rankings), dtype=np.float64)
    for i, (ranking, group) in enumerate(zip(rankings, groups)):
        ranking = np.asarray(ranking, dtype=np.int64).reshape(-1)
        if ranking.size < top:
            raise ValueError(f'ranking of query {i} has {ranking.size} '
                             f'entries, fewer than top={top}')
        group = _as_index_array(group, 'group')
        counts[i] = np.count_nonzero(np.isin(ranking[:top], group))
    score = float(counts.mean()) if counts.size else float('nan')
    return score, counts

