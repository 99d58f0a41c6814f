# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Shared machinery of the retrieval metrics: gather, whiten, search."""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from torch import Tensor

from ..descriptors.feature_extractor import FEATURE_FIELD
from ..search import search
from ..whitening import PCAWhitening

_ROLES = ('query_idx', 'db_idx', 'whiten_idx')


class BaseRetrievalMetric(BaseMetric):
    """Collect descriptors by role, search the database, score the rankings.

    Every predicted data sample carries a ``retrieval_feature`` and the role
    indices set by the retrieval datasets (``query_idx``, ``db_idx``,
    ``whiten_idx``; -1 when not in that role) plus, for queries, its
    ``retrieval_gt``. :meth:`compute_metrics` orders the descriptors by role
    index, optionally learns a PCA whitening on the whitening set and applies
    it to queries and database, L2-normalises, ranks the database for each
    query (:func:`ehm_mm.retrieval.search.search`: exact torch or faiss, same
    ranking, ties broken by the lower database index) and hands the
    rankings to :meth:`score_rankings`, implemented by each metric.

    Args:
        topk (int, optional): Length of each ranking; None ranks the whole
            database. Defaults to None.
        whitening (dict, optional): Arguments of
            :class:`~ehm_mm.retrieval.whitening.PCAWhitening` (``dim``,
            ``power``, ``eps_ratio``); the dataset must then provide a
            whitening set (``whitening_folder``). None disables whitening.
            Defaults to None.
        search_backend (str): ``'auto'``, ``'torch'`` or ``'faiss'``.
            Defaults to ``'auto'``.
        faiss_min_database_size (int): Database size from which ``'auto'``
            uses faiss. Defaults to 50000.
        collect_device (str): Device used to collect results across ranks.
            Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names (e.g. the
            dataset name). Defaults to None (``default_prefix``).
    """

    default_prefix: Optional[str] = 'retrieval'

    def __init__(self,
                 topk: Optional[int] = None,
                 whitening: Optional[dict] = None,
                 search_backend: str = 'auto',
                 faiss_min_database_size: int = 50000,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if topk is not None and topk < 1:
            raise ValueError(f'topk must be >= 1 or None, got {topk}')
        if whitening is not None and not isinstance(whitening, dict):
            raise TypeError('whitening must be a dict of PCAWhitening '
                            f'arguments or None, got {whitening!r}')
        if whitening is not None:
            PCAWhitening(**whitening)  # validate the arguments early
        self.topk = topk
        self.whitening = whitening
        self.search_backend = search_backend
        self.faiss_min_database_size = faiss_min_database_size

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each sample's descriptor, roles and ground truth.

        Args:
            data_batch (dict): The input batch (unused).
            data_samples (Sequence[dict]): Model outputs as dicts.
        """
        for sample in data_samples:
            if FEATURE_FIELD not in sample:
                raise KeyError(f'data sample has no {FEATURE_FIELD!r}; use '
                               'RetrievalFeatureExtractor as the model')
            missing = [k for k in _ROLES if k not in sample]
            if missing:
                raise KeyError(
                    f'data sample {sample.get("img_path")} lacks {missing}; '
                    'use a retrieval dataset and PackRetrievalInputs')
            result = {k: int(sample[k]) for k in _ROLES}
            result['feature'] = sample[FEATURE_FIELD].detach().float().cpu()
            if result['query_idx'] >= 0:
                if 'retrieval_gt' not in sample:
                    raise KeyError(f'query {sample.get("img_path")} has no '
                                   'retrieval_gt')
                result['retrieval_gt'] = sample['retrieval_gt']
                result['block'] = sample.get('block')
                result['img_path'] = sample.get('img_path')
            self.results.append(result)

    def _gather_role(self, results: List[dict], role: str,
                     expected: Optional[int]) -> Tuple[Tensor, List[dict]]:
        """Stack the descriptors of one role in index order."""
        by_index = {}
        for result in results:
            index = result[role]
            if index >= 0:
                # Distributed samplers may repeat a sample: keep one.
                by_index.setdefault(index, result)
        count = len(by_index)
        if expected is not None and count != expected:
            raise ValueError(f'{count} {role} features collected but the '
                             f'dataset has {expected}')
        if count and sorted(by_index) != list(range(count)):
            absent = sorted(set(range(max(by_index) + 1)) - set(by_index))
            raise ValueError(f'{role} features missing for indices '
                             f'{absent[:10]}')
        items = [by_index[i] for i in range(count)]
        if not items:
            return torch.zeros(0), items
        return torch.stack([r['feature'] for r in items]), items

    def rank(self, results: List[dict]) -> Tuple[np.ndarray, List[dict]]:
        """Order descriptors by role, whiten, and rank the database.

        Args:
            results (list[dict]): What :meth:`process` collected.

        Returns:
            tuple[np.ndarray, list[dict]]: Rankings of shape (Q, k) and the
            per-query records (``retrieval_gt``, ``block``, ...).
        """
        meta = self.dataset_meta or {}
        queries, query_items = self._gather_role(results, 'query_idx',
                                                 meta.get('num_queries'))
        database, _ = self._gather_role(results, 'db_idx',
                                        meta.get('num_database'))
        whitening, _ = self._gather_role(results, 'whiten_idx',
                                         meta.get('num_whitening'))
        if not query_items or database.numel() == 0:
            raise ValueError(f'{len(query_items)} query and '
                             f'{len(database)} database features collected')
        if self.whitening is not None:
            if whitening.numel() == 0:
                raise ValueError(
                    'whitening is configured but the dataset has no '
                    'whitening images: set its whitening_folder')
            pca = PCAWhitening(**self.whitening).fit(whitening)
            queries = pca.transform(queries)
            database = pca.transform(database)
        elif whitening.numel() > 0:
            raise ValueError(
                f'the dataset provides {len(whitening)} whitening images but '
                'the metric has whitening=None: set whitening=dict(...)')
        queries = F.normalize(queries, p=2, dim=1)
        database = F.normalize(database, p=2, dim=1)
        _, indices = search(
            queries,
            database,
            topk=self.topk,
            backend=self.search_backend,
            faiss_min_database_size=self.faiss_min_database_size)
        return indices.numpy(), query_items

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Rank, score, and log a table.

        Args:
            results (list[dict]): What :meth:`process` collected.

        Returns:
            dict[str, float]: The metrics.
        """
        rankings, queries = self.rank(results)
        metrics, table = self.score_rankings(rankings, queries)
        print_log('\n' + table, logger='current')
        return metrics

    def dataset_title(self, num_queries: int) -> str:
        """Title line of the result table.

        Args:
            num_queries (int): Number of queries.

        Returns:
            str: The title.
        """
        meta = self.dataset_meta or {}
        name = meta.get('dataset_name', 'retrieval')
        database = meta.get('num_database')
        database = f', {database} database images' if database else ''
        whitening = ', PCA-whitened' if self.whitening is not None else ''
        return f'{name}: {num_queries} queries{database}{whitening}'

    def score_rankings(self, rankings: np.ndarray,
                       queries: List[dict]) -> Tuple[Dict[str, float], str]:
        """Score the rankings.

        Args:
            rankings (np.ndarray): Database indices of shape (Q, k).
            queries (list[dict]): Per-query records in query order.

        Returns:
            tuple[dict[str, float], str]: Metrics and a printable table.
        """
        raise NotImplementedError
