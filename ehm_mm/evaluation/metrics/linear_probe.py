# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Linear probe of frozen image features on a held-out split."""
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.registry import METRICS
from torch import Tensor

from .feature_label_metric import FeatureLabelMetric


def split_indices(num: int,
                  train_fraction: float = 0.5,
                  seed: int = 0) -> Tuple[Tensor, Tensor]:
    """A fixed random split of ``num`` samples into probe-train and test.

    Args:
        num (int): Number of samples, at least 2.
        train_fraction (float): Share of the samples that train the probe,
            in ``(0, 1)``. Defaults to 0.5.
        seed (int): Seed of the permutation. Defaults to 0.

    Returns:
        Tuple[Tensor, Tensor]: Sorted LongTensors of the train and test
        indices, both non-empty.
    """
    if not isinstance(num, int) or num < 2:
        raise ValueError(f'a probe needs at least 2 samples, got {num!r}')
    if not 0 < train_fraction < 1:
        raise ValueError(
            f'train_fraction must be in (0, 1), got {train_fraction!r}')
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    num_train = min(max(int(round(train_fraction * num)), 1), num - 1)
    return order[:num_train].sort().values, order[num_train:].sort().values


def fit_linear_probe(features: Tensor,
                     labels: Tensor,
                     num_classes: int,
                     weight_decay: float = 1e-3,
                     max_iter: int = 100) -> Tuple[Tensor, Tensor, Tensor,
                                                   Tensor]:
    """Train a softmax classifier on frozen, standardised features.

    Full-batch L-BFGS (strong Wolfe line search) on the mean cross-entropy
    plus ``weight_decay * ||W||^2``, in float64 on the CPU, from zero
    weights: deterministic for the same input.

    Args:
        features (Tensor): ``[M, C]`` training features.
        labels (Tensor): ``[M]`` integer labels in ``[0, num_classes)``.
        num_classes (int): Number of classes.
        weight_decay (float): L2 penalty on the weights. Defaults to 1e-3.
        max_iter (int): L-BFGS iterations. Defaults to 100.

    Returns:
        Tuple[Tensor, Tensor, Tensor, Tensor]: ``weight [C, K]``, ``bias
        [K]``, the feature ``mean [C]`` and ``std [C]`` to standardise
        with (see :func:`probe_logits`).
    """
    if features.dim() != 2 or labels.shape != (features.shape[0], ):
        raise ValueError('features must be [M, C] and labels [M], got '
                         f'{tuple(features.shape)} and {tuple(labels.shape)}')
    if labels.numel() and (int(labels.min()) < 0
                           or int(labels.max()) >= num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}), got range '
                         f'[{int(labels.min())}, {int(labels.max())}]')
    x = features.detach().double().cpu()
    y = labels.detach().long().cpu()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp(min=1e-6)
    x = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64,
                         requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias],
                                  lr=1.0,
                                  max_iter=max_iter,
                                  line_search_fn='strong_wolfe')

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


def probe_logits(features: Tensor, probe: Tuple[Tensor, ...]) -> Tensor:
    """Class scores of a probe from :func:`fit_linear_probe`.

    Args:
        features (Tensor): ``[M, C]``.
        probe (tuple): ``(weight, bias, mean, std)``.

    Returns:
        Tensor: float64 ``[M, K]``.
    """
    weight, bias, mean, std = probe
    x = (features.detach().double().cpu() - mean) / std
    return x @ weight + bias


class LinearProbe:
    """The protocol of a linear probe on a set of frozen features.

    A fixed random split of the samples (:func:`split_indices`) into a
    probe-train and a test part, and a softmax classifier trained on the
    standardised train features (:func:`fit_linear_probe`) that predicts
    the test labels. :class:`LinearProbeAccuracy` applies it to one feature
    per image, :class:`~ehm_mm.evaluation.PatchSegProbe` to the patch
    features of whole images.

    Args:
        train_fraction (float): Share of the samples that train the probe,
            in ``(0, 1)``. Defaults to 0.5.
        weight_decay (float): L2 penalty of the classifier, ``>= 0``.
            Defaults to 1e-3.
        max_iter (int): L-BFGS iterations, ``>= 1``. Defaults to 100.
        seed (int): Seed of the split. Defaults to 0.
    """

    def __init__(self,
                 train_fraction: float = 0.5,
                 weight_decay: float = 1e-3,
                 max_iter: int = 100,
                 seed: int = 0) -> None:
        split_indices(2, train_fraction)  # validates the fraction
        if not weight_decay >= 0:
            raise ValueError(
                f'weight_decay must be >= 0, got {weight_decay!r}')
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(
                f'max_iter must be a positive int, got {max_iter!r}')
        self.train_fraction = train_fraction
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.seed = seed

    def split(self, num: int) -> Tuple[Tensor, Tensor]:
        """The train and test indices of ``num`` samples.

        Args:
            num (int): Number of samples, at least 2.

        Returns:
            Tuple[Tensor, Tensor]: See :func:`split_indices`.
        """
        return split_indices(num, self.train_fraction, self.seed)

    def fit_predict(self, train_features: Tensor, train_labels: Tensor,
                    num_classes: int, test_features: Tensor) -> Tensor:
        """Train the classifier and predict the labels of the test features.

        Args:
            train_features (Tensor): ``[M, C]`` features of the train part.
            train_labels (Tensor): ``[M]`` labels in ``[0, num_classes)``.
            num_classes (int): Number of classes.
            test_features (Tensor): ``[N, C]`` features of the test part.

        Returns:
            Tensor: ``[N]`` predicted labels.
        """
        probe = fit_linear_probe(train_features, train_labels, num_classes,
                                 self.weight_decay, self.max_iter)
        return probe_logits(test_features, probe).argmax(dim=1)


class LinearProbeMixin:
    """Gives a metric a :class:`LinearProbe` as ``self.probe``.

    Mixed in before the metric's base class (``class M(LinearProbeMixin,
    BaseMetric)``): it takes the probe's arguments, keyword only, and passes
    every other keyword argument on to that base class.

    Args:
        train_fraction (float): Share of the samples that train the probe.
            Defaults to 0.5.
        weight_decay (float): L2 penalty of the classifier. Defaults to
            1e-3.
        max_iter (int): L-BFGS iterations. Defaults to 100.
        seed (int): Seed of the split. Defaults to 0.
        **kwargs: The arguments of the metric's base class (e.g.
            ``collect_device`` and ``prefix``).
    """

    def __init__(self,
                 *,
                 train_fraction: float = 0.5,
                 weight_decay: float = 1e-3,
                 max_iter: int = 100,
                 seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.probe = LinearProbe(train_fraction, weight_decay, max_iter, seed)


@METRICS.register_module()
class LinearProbeAccuracy(LinearProbeMixin, FeatureLabelMetric):
    """Top-1 accuracy of a linear classifier on frozen features.

    Collects one feature and one label per evaluated sample, splits the set
    with a fixed seed into a probe-train and a test part, trains a softmax
    classifier on the standardised train features (:class:`LinearProbe`)
    and reports the test accuracy in percent as ``linear/top1``. Like
    :class:`~ehm_mm.evaluation.KNNAccuracy` it needs nothing but the model's
    ``'predict'`` features, so it runs as a validation metric during
    pretraining.

    Args:
        **kwargs: The probe's ``train_fraction``, ``weight_decay``,
            ``max_iter`` and ``seed`` (:class:`LinearProbeMixin`), then
            ``feature_key``, ``collect_device`` and ``prefix``
            (:class:`~ehm_mm.evaluation.metrics.FeatureLabelMetric`; the
            prefix defaults to ``'linear'``).
    """

    default_prefix: Optional[str] = 'linear'

    def compute_metrics(self, results: List[Tuple[Tensor, int]]) -> dict:
        """Train the probe on one part and test it on the other.

        Args:
            results (list[tuple[Tensor, int]]): Feature and label per
                sample.

        Returns:
            dict: ``{'top1': test accuracy in percent}``.
        """
        features = torch.stack([feat for feat, _ in results])
        labels = torch.tensor([label for _, label in results])
        train, test = self.probe.split(len(results))
        pred = self.probe.fit_predict(features[train], labels[train],
                                      int(labels.max()) + 1, features[test])
        return dict(top1=100.0 * float((pred == labels[test]).double().mean()))
