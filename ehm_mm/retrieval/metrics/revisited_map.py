# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Revisited Oxford/Paris mAP and mP@k for the Easy / Medium / Hard setups."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmpretrain.registry import METRICS

from .base_retrieval_metric import BaseRetrievalMetric
from .ranking_metrics import (
    REVISITED_SETUPS,
    mean_average_precision,
    revisited_ground_truth,
)
from .table import format_table

_SHORT = dict(easy='E', medium='M', hard='H')


@METRICS.register_module()
class RevisitedMAP(BaseRetrievalMetric):
    """mAP and mean precision@k of the revisited Oxford/Paris protocol.

    Follows ``compute_map`` of the revisitop code (Radenovic et al., CVPR
    2018) exactly, for each setup:

    - **Easy**: positives = easy; hard and junk are ignored.
    - **Medium**: positives = easy + hard; junk is ignored.
    - **Hard**: positives = hard; easy and junk are ignored.

    Ignored images are removed from the ranking, AP is the trapezoidal area
    under the PR curve, queries without positives in a setup are excluded
    from its mean, and precision@k uses revisitop's ``min(max rank, k)``
    cut-off. The whole database is ranked. Metrics are in percent, named
    ``mAP_E``, ``mAP_M``, ``mAP_H`` and ``mP@k_E`` etc.

    Args:
        ks (Sequence[int]): Cut-offs of mean precision. Defaults to
            ``(1, 5, 10)``.
        setups (Sequence[str]): Setups to report. Defaults to
            ``('easy', 'medium', 'hard')``.
        **kwargs: Arguments of :class:`BaseRetrievalMetric` (``topk`` is
            not allowed: the protocol ranks the whole database).
    """

    default_prefix: Optional[str] = 'revisited'

    def __init__(self,
                 ks: Sequence[int] = (1, 5, 10),
                 setups: Sequence[str] = ('easy', 'medium', 'hard'),
                 **kwargs) -> None:
        if kwargs.get('topk') is not None:
            raise ValueError('RevisitedMAP ranks the whole database; topk '
                             'must be None')
        super().__init__(**kwargs)
        for setup in setups:
            if setup not in REVISITED_SETUPS:
                raise ValueError(f'unknown setup {setup!r}; choose from '
                                 f'{list(REVISITED_SETUPS)}')
        if any(int(k) < 1 for k in ks):
            raise ValueError(f'ks must be >= 1, got {ks}')
        self.ks = tuple(int(k) for k in ks)
        self.setups = tuple(setups)

    def score_rankings(self, rankings: np.ndarray,
                       queries: List[dict]) -> Tuple[Dict[str, float], str]:
        """Compute mAP and mP@k for each setup.

        Args:
            rankings (np.ndarray): Database indices of shape (Q, N).
            queries (list[dict]): Per-query records with ``retrieval_gt``
                holding ``easy``, ``hard`` and ``junk`` lists.

        Returns:
            tuple[dict[str, float], str]: Metrics (percent) and a table.
        """
        metrics = {}
        rows = []
        for setup in self.setups:
            gts = [
                revisited_ground_truth(q['retrieval_gt'], setup)
                for q in queries
            ]
            result = mean_average_precision(rankings, gts, self.ks)
            short = _SHORT[setup]
            metrics[f'mAP_{short}'] = 100.0 * result['mAP']
            for k, value in zip(self.ks, result['mP']):
                metrics[f'mP@{k}_{short}'] = 100.0 * float(value)
            rows.append([setup.capitalize(), result['num_evaluated']] +
                        [metrics[f'mAP_{short}']] +
                        [metrics[f'mP@{k}_{short}'] for k in self.ks])
        header = ['Setup', 'Queries', 'mAP'] + [f'mP@{k}' for k in self.ks]
        table = format_table(self.dataset_title(len(queries)), header, rows)
        return metrics, table
