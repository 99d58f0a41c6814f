# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Weighted k-NN accuracy of query images against a separate memory bank."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.registry import METRICS

from .knn_accuracy import KNNAccuracy


def knn_predict_bank(queries: torch.Tensor,
                     bank: torch.Tensor,
                     bank_labels: torch.Tensor,
                     k: int = 20,
                     temperature: float = 0.07,
                     num_classes: Optional[int] = None) -> torch.Tensor:
    """Classify each query by a weighted vote of its k nearest bank samples.

    Cosine similarity of L2-normalised features; each of the ``k`` most
    similar bank samples votes for its label with weight
    ``exp(similarity / temperature)`` (Wu et al. 2018, DINO). Queries never
    vote, so no query sees another query's label.

    Args:
        queries (torch.Tensor): ``[Q, C]`` query features.
        bank (torch.Tensor): ``[M, C]`` bank features.
        bank_labels (torch.Tensor): ``[M]`` integer labels of the bank.
        k (int): Number of neighbours, in ``[1, M]``. Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        num_classes (int, optional): Number of classes. Defaults to None,
            which means ``bank_labels.max() + 1``.

    Returns:
        torch.Tensor: ``[Q]`` predicted labels.
    """
    if (queries.dim() != 2 or bank.dim() != 2
            or queries.shape[1] != bank.shape[1]
            or bank_labels.shape != (bank.shape[0], )):
        raise ValueError(
            'queries must be [Q, C], bank [M, C] and bank_labels [M], got '
            f'{tuple(queries.shape)}, {tuple(bank.shape)} and '
            f'{tuple(bank_labels.shape)}')
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f'k must be in [1, M] = [1, {bank.shape[0]}], '
                         f'got {k}')
    sim = F.normalize(queries.double(), dim=1) @ F.normalize(
        bank.double(), dim=1).t()  # [Q, M]
    top_sim, top_idx = sim.topk(k, dim=1)  # [Q, k]
    weights = (top_sim / temperature).exp()
    if num_classes is None:
        num_classes = int(bank_labels.max()) + 1
    votes = torch.zeros(queries.shape[0], num_classes, dtype=torch.float64)
    votes.scatter_add_(1, bank_labels[top_idx], weights)
    return votes.argmax(dim=1)


@METRICS.register_module()
class KNNBankAccuracy(KNNAccuracy):
    """Weighted k-NN top-1 accuracy of queries against a separate bank.

    :class:`KNNAccuracy` with a memory bank apart from the queries. The
    evaluated set holds two kinds of samples, told apart by a boolean
    field of each data sample (``knn_bank``, set by
    :class:`~ehm_mm.datasets.SyntheticShapes` with ``knn_bank=True`` and
    packed with ``PackInputs(meta_keys=[..., 'knn_bank'])``): the bank
    samples are the memory, every other sample is a query classified by
    :func:`knn_predict_bank`. Reported as ``knnbank/top1`` (percent), with
    the number of queries and bank samples as ``knnbank/num_queries`` and
    ``knnbank/num_bank``. Combine a bank split and a query split with
    mmengine's ``ConcatDataset``.

    Args:
        k (int): Number of neighbours, at most the bank size.
            Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        bank_key (str): Boolean field marking bank samples.
            Defaults to ``'knn_bank'``.
        feature_key (str): Field of the feature. Defaults to ``'feature'``.
        collect_device (str): Where the features of all ranks are gathered.
            Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names; None uses
            ``'knnbank'``. Defaults to None.
    """

    default_prefix: Optional[str] = 'knnbank'

    def __init__(self,
                 k: int = 20,
                 temperature: float = 0.07,
                 bank_key: str = 'knn_bank',
                 feature_key: str = 'feature',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(k, temperature, feature_key, collect_device, prefix)
        self.bank_key = bank_key

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store feature, label and bank flag of each sample.

        Args:
            data_batch (dict): Unused.
            data_samples (Sequence[dict]): Predictions with the feature,
                ``gt_label`` and the bank flag.
        """
        for sample in data_samples:
            if self.bank_key not in sample:
                raise KeyError(
                    f'KNNBankAccuracy needs `{self.bank_key}` in each data '
                    f'sample (PackInputs meta_keys), found {sorted(sample)}')
        start = len(self.results)
        super().process(data_batch, data_samples)
        for i, sample in enumerate(data_samples):
            feature, label = self.results[start + i]
            self.results[start + i] = (feature, label,
                                       bool(sample[self.bank_key]))

    def compute_metrics(self, results: List[Tuple[torch.Tensor, int,
                                                  bool]]) -> dict:
        """Classify the queries by the bank.

        Args:
            results (list[tuple]): ``(feature, label, is_bank)`` per sample.

        Returns:
            dict: ``top1`` (percent), ``num_queries`` and ``num_bank``.
        """
        bank = [(f, y) for f, y, is_bank in results if is_bank]
        queries = [(f, y) for f, y, is_bank in results if not is_bank]
        if not bank or not queries:
            raise ValueError(
                'KNNBankAccuracy needs bank and query samples, got '
                f'{len(bank)} bank and {len(queries)} query samples')
        if len(bank) < self.k:
            raise ValueError(f'KNNBankAccuracy: k={self.k} exceeds the bank '
                             f'of {len(bank)} samples')
        bank_labels = torch.tensor([y for _, y in bank])
        query_labels = torch.tensor([y for _, y in queries])
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
        pred = knn_predict_bank(
            torch.stack([f for f, _ in queries]),
            torch.stack([f for f, _ in bank]), bank_labels, self.k,
            self.temperature, num_classes)
        return dict(
            top1=100.0 * float((pred == query_labels).double().mean()),
            num_queries=len(queries),
            num_bank=len(bank))
