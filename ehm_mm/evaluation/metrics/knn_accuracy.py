# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Leave-one-out weighted k-NN accuracy of frozen features."""
import logging
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmpretrain.registry import METRICS

from .feature_label_metric import FeatureLabelMetric


def knn_predict(features: torch.Tensor,
                labels: torch.Tensor,
                k: int = 20,
                temperature: float = 0.07,
                num_classes: Optional[int] = None) -> torch.Tensor:
    """Classify every sample by a weighted vote of its k nearest others.

    Similarity is the cosine of L2-normalised features; each of the ``k``
    most similar *other* samples votes for its label with weight
    ``exp(similarity / temperature)`` (the weighted k-NN of Wu et al. 2018
    and DINO). A sample never votes for itself (leave-one-out).

    Args:
        features (torch.Tensor): ``[M, C]`` features.
        labels (torch.Tensor): ``[M]`` integer labels.
        k (int): Number of neighbours, at most ``M - 1``. Defaults to 20.
        temperature (float): Softmax temperature of the votes.
            Defaults to 0.07.
        num_classes (int, optional): Number of classes. Defaults to None,
            which means ``labels.max() + 1``.

    Returns:
        torch.Tensor: ``[M]`` predicted labels.
    """
    num = features.shape[0]
    if features.dim() != 2 or labels.shape != (num, ):
        raise ValueError(
            f'features must be [M, C] and labels [M], got shapes '
            f'{tuple(features.shape)} and {tuple(labels.shape)}')
    if not 1 <= k <= num - 1:
        raise ValueError(f'k must be in [1, M - 1] = [1, {num - 1}], got {k}')
    feats = F.normalize(features.double(), dim=1)
    sim = feats @ feats.t()
    sim.fill_diagonal_(-float('inf'))
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    votes = torch.zeros(num, num_classes, dtype=torch.float64)
    votes.scatter_add_(1, labels[top_idx], weights)
    return votes.argmax(dim=1)


@METRICS.register_module()
class KNNAccuracy(FeatureLabelMetric):
    """Leave-one-out weighted k-NN top-1 accuracy on the evaluated set.

    Collects one feature vector and one label per sample, then classifies
    every sample by the weighted vote of its ``k`` nearest other samples
    (cosine similarity, see :func:`knn_predict`) and reports the accuracy in
    percent as ``knn/top1``. It needs no separate memory bank, so it runs as
    an ordinary validation metric of a self-supervised model whose
    ``'predict'`` mode writes a feature per sample (``EHMMAE`` writes
    ``feature``).

    Args:
        k (int): Number of neighbours. When the evaluated set holds fewer
            than ``k + 1`` samples, ``k`` is lowered to ``M - 1`` with a
            warning. Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        feature_key (str): Field of the feature. Defaults to ``'feature'``.
        collect_device (str): Where the features of all ranks are gathered
            before the vote. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names; None uses
            ``default_prefix``, ``'knn'``. Defaults to None.
    """

    default_prefix: Optional[str] = 'knn'

    def __init__(self,
                 k: int = 20,
                 temperature: float = 0.07,
                 feature_key: str = 'feature',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f'k must be a positive int, got {k!r}')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        super().__init__(
            feature_key=feature_key,
            collect_device=collect_device,
            prefix=prefix)
        self.k = k
        self.temperature = temperature

    def compute_metrics(self, results: List[Tuple[torch.Tensor,
                                                  int]]) -> dict:
        """Run the leave-one-out k-NN.

        Args:
            results (list[tuple[torch.Tensor, int]]): Feature and label per
                sample.

        Returns:
            dict: ``{'top1': accuracy in percent}``.
        """
        if len(results) < 2:
            raise ValueError('KNNAccuracy needs at least 2 samples, got '
                             f'{len(results)}')
        features = torch.stack([feat for feat, _ in results])
        labels = torch.tensor([label for _, label in results])
        k = self.k
        if k > len(results) - 1:
            k = len(results) - 1
            print_log(
                f'KNNAccuracy: only {len(results)} samples, using k={k} '
                f'instead of {self.k}',
                logger='current',
                level=logging.WARNING)
        pred = knn_predict(features, labels, k, self.temperature)
        return dict(top1=100.0 * float(np.mean((pred == labels).numpy())))
