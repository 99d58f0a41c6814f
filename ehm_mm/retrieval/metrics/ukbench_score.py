# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""UKBench N-S score."""
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmpretrain.registry import METRICS

from .base_retrieval_metric import BaseRetrievalMetric
from .ranking_metrics import ns_score
from .table import format_table


@METRICS.register_module()
class UKBenchScore(BaseRetrievalMetric):
    """N-S score of UKBench (Nister & Stewenius, CVPR 2006).

    For every image used as a query, the number of images of its group of
    four (itself included) among the top four results, averaged over the
    queries; 4 is perfect. Each query's ``retrieval_gt['positives']`` is its
    group. Reported as ``N-S`` (out of 4) and ``N-S_percent`` (out of 100).

    Args:
        top (int): The cut-off (the group size). Defaults to 4.
        **kwargs: Arguments of :class:`BaseRetrievalMetric` (``topk`` is
            set to ``top``).
    """

    default_prefix: Optional[str] = 'ukbench'

    def __init__(self, top: int = 4, **kwargs) -> None:
        if top < 1:
            raise ValueError(f'top must be >= 1, got {top}')
        if kwargs.get('topk', top) != top:
            raise ValueError('UKBenchScore ranks exactly top results; do not '
                             'set topk')
        kwargs['topk'] = top
        super().__init__(**kwargs)
        self.top = top

    def score_rankings(self, rankings: np.ndarray,
                       queries: List[dict]) -> Tuple[Dict[str, float], str]:
        """Compute the N-S score.

        Args:
            rankings (np.ndarray): Database indices of shape (Q, top).
            queries (list[dict]): Per-query records with
                ``retrieval_gt['positives']`` (the group).

        Returns:
            tuple[dict[str, float], str]: Metrics and a table.
        """
        groups = [q['retrieval_gt']['positives'] for q in queries]
        score, _ = ns_score(rankings, groups, self.top)
        metrics = {'N-S': score, 'N-S_percent': 100.0 * score / self.top}
        table = format_table(
            self.dataset_title(len(queries)),
            ['Queries', f'N-S (max {self.top})', 'N-S (%)'],
            [[len(queries), score, metrics['N-S_percent']]])
        return metrics, table
