# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Instance-level mAP (INRIA Holidays, Copydays)."""
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmpretrain.registry import METRICS

from .base_retrieval_metric import BaseRetrievalMetric
from .ranking_metrics import mean_average_precision
from .table import format_table


def _block_key(block: str) -> str:
    """Metric-name-safe block name (``'jpegqual/3'`` -> ``'jpegqual_3'``)."""
    return block.replace('/', '_')


@METRICS.register_module()
class InstanceMAP(BaseRetrievalMetric):
    """mAP of instance retrieval with the Holidays evaluation rules.

    Each query's ``retrieval_gt`` lists its ``positives`` and ``junk``
    (database indices). Junk is removed from the ranking; for Holidays the
    junk is the query itself, which is how the query is excluded from its own
    ranking. AP is the trapezoidal AP of the Holidays package
    (``score_ap_from_ranks_1``); queries without positives are excluded.
    With ``topk`` only the first ``topk`` results count (e.g. 20 for the
    Copydays protocol of DINO); positives beyond it add nothing.

    When queries carry a ``block`` (Copydays), the mAP of each block is
    reported too, as ``mAP_<block>`` (``/`` replaced by ``_``). Metrics are
    in percent.

    Args:
        **kwargs: Arguments of :class:`BaseRetrievalMetric`.
    """

    default_prefix: Optional[str] = 'instance'

    def score_rankings(self, rankings: np.ndarray,
                       queries: List[dict]) -> Tuple[Dict[str, float], str]:
        """Compute the mAP over all queries and per block.

        Args:
            rankings (np.ndarray): Database indices of shape (Q, k).
            queries (list[dict]): Per-query records with ``retrieval_gt``
                (``positives``, ``junk``) and optionally ``block``.

        Returns:
            tuple[dict[str, float], str]: Metrics (percent) and a table.
        """
        gts = [q['retrieval_gt'] for q in queries]
        result = mean_average_precision(rankings, gts)
        metrics = dict(mAP=100.0 * result['mAP'])
        rows = []
        blocks = [q.get('block') for q in queries]
        if any(b is not None for b in blocks):
            if any(b is None for b in blocks):
                raise ValueError('either every query or none has a block')
            aps = result['aps']
            for block in dict.fromkeys(blocks):
                mask = np.array([b == block for b in blocks])
                block_aps = aps[mask & ~np.isnan(aps)]
                value = 100.0 * float(block_aps.mean()) if block_aps.size \
                    else float('nan')
                metrics[f'mAP_{_block_key(block)}'] = value
                rows.append([block, int(block_aps.size), value])
        rows.append(['all', result['num_evaluated'], metrics['mAP']])
        top = 'all' if self.topk is None else f'top-{self.topk}'
        header = ['Queries', 'Count', f'mAP ({top})']
        table = format_table(self.dataset_title(len(queries)), header, rows)
        return metrics, table
