# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Patch-level segmentation probe: a linear classifier per patch feature."""
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS
from torch import Tensor

from .linear_probe import LinearProbeMixin

LABEL_SOURCES = ('seg_map', 'object_mask')


def patch_labels(label_map: Tensor, grid_size: Tuple[int, int],
                 num_classes: int) -> Tensor:
    """The majority label of every patch of a per-pixel label map.

    Ties go to the smaller label.

    Args:
        label_map (Tensor): ``[H, W]`` integer labels in
            ``[0, num_classes)``, ``H`` and ``W`` multiples of the grid.
        grid_size (tuple[int, int]): The patch grid ``(h, w)``.
        num_classes (int): Number of classes.

    Returns:
        Tensor: LongTensor ``[h * w]``, row-major.
    """
    if label_map.dim() != 2:
        raise ValueError('label map must be [H, W], got shape '
                         f'{tuple(label_map.shape)}')
    h, w = grid_size
    H, W = label_map.shape
    if H % h or W % w:
        raise ValueError(f'label map of size {H}x{W} is not a whole number '
                         f'of patches of the {h}x{w} grid')
    labels = label_map.long()
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f'label map values must lie in [0, {num_classes}), '
                         f'got range [{int(labels.min())}, '
                         f'{int(labels.max())}]')
    counts = F.one_hot(labels, num_classes).reshape(h, H // h, w, W // w,
                                                     num_classes)
    return counts.sum(dim=(1, 3)).reshape(h * w, num_classes).argmax(dim=1)


def mean_iou(pred: Tensor, target: Tensor,
             num_classes: int) -> Tuple[float, Tensor]:
    """Mean IoU over the classes present in ``pred`` or ``target``.

    Args:
        pred (Tensor): ``[P]`` predicted labels.
        target (Tensor): ``[P]`` true labels.
        num_classes (int): Number of classes.

    Returns:
        Tuple[float, Tensor]: mIoU in [0, 1] and the per-class IoU
        ``[num_classes]`` (NaN for absent classes).
    """
    confusion = torch.bincount(
        target.long() * num_classes + pred.long(),
        minlength=num_classes**2).reshape(num_classes, num_classes).double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1),
                      torch.full_like(inter, float('nan')))
    present = union > 0
    return float(iou[present].mean()), iou


@METRICS.register_module()
class PatchSegProbe(LinearProbeMixin, BaseMetric):
    """Linear segmentation probe on frozen patch features, mIoU.

    Every evaluated image contributes its patch features (``EHMMAE`` with
    ``predict_patch_features=True`` writes ``patch_features`` ``[h, w, C]``)
    and a per-patch label: the majority label of the pixels of the patch
    (:func:`patch_labels`). The images are split with a fixed seed into a
    probe-train and a test part, a softmax classifier is trained on the
    train patches (:class:`~ehm_mm.evaluation.metrics.LinearProbe`)
    and the test patches are scored: ``segprobe/mIoU`` (mean IoU over the
    classes present, in percent) and ``segprobe/acc`` (patch accuracy).

    Labels come from ``gt_seg_map`` (``label_source='seg_map'``, e.g.
    :class:`~ehm_mm.datasets.SyntheticScenes` class maps loaded by
    ``LoadLabelMap``) or from the object mask and the image label
    (``'object_mask'``: ``gt_object_mask * (gt_label + 1)``, for
    :class:`~ehm_mm.datasets.SyntheticShapes`).

    Args:
        num_classes (int): Number of segmentation classes, background
            included (7 for the synthetic datasets).
        label_source (str): ``'seg_map'`` or ``'object_mask'``. Defaults
            to ``'seg_map'``.
        feature_key (str): Field of the patch features, keyword only.
            Defaults to ``'patch_features'``.
        **kwargs: The probe's ``train_fraction`` (share of the images that
            train it), ``weight_decay``, ``max_iter`` and ``seed``
            (:class:`~ehm_mm.evaluation.metrics.LinearProbeMixin`),
            then ``collect_device`` and ``prefix`` (defaults to
            ``'segprobe'``).
    """

    default_prefix: Optional[str] = 'segprobe'

    def __init__(self,
                 num_classes: int,
                 label_source: str = 'seg_map',
                 *,
                 feature_key: str = 'patch_features',
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feature_key = feature_key
        if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                or num_classes < 2):
            raise ValueError(
                f'num_classes must be an int >= 2, got {num_classes!r}')
        if label_source not in LABEL_SOURCES:
            raise ValueError(f'label_source must be one of {LABEL_SOURCES}, '
                             f'got {label_source!r}')
        self.num_classes = num_classes
        self.label_source = label_source

    def _label_map(self, sample: dict) -> Tensor:
        if self.label_source == 'seg_map':
            keys = ('gt_seg_map', )
        else:
            keys = ('gt_object_mask', 'gt_label')
        for key in keys:
            if key not in sample:
                raise KeyError(f'PatchSegProbe(label_source='
                               f'{self.label_source!r}) needs `{key}` in '
                               f'each data sample, found {sorted(sample)}')
        if self.label_source == 'seg_map':
            return torch.as_tensor(np.asarray(sample['gt_seg_map']))
        mask = torch.as_tensor(np.asarray(sample['gt_object_mask'])) != 0
        label = int(torch.as_tensor(sample['gt_label']).reshape(-1)[0])
        return mask.long() * (label + 1)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store the patch features and patch labels of each image.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): Predictions with patch features
                and labels.
        """
        for sample in data_samples:
            if self.feature_key not in sample:
                raise KeyError(
                    f'PatchSegProbe needs `{self.feature_key}` ([h, w, C]) '
                    'in each data sample (EHMMAE: set '
                    f'predict_patch_features=True), found {sorted(sample)}')
            feats = torch.as_tensor(sample[self.feature_key]).detach()
            if feats.dim() != 3:
                raise ValueError(f'{self.feature_key} must be [h, w, C], got '
                                 f'shape {tuple(feats.shape)}')
            h, w, channels = feats.shape
            labels = patch_labels(self._label_map(sample), (h, w),
                                  self.num_classes)
            self.results.append(
                (feats.reshape(h * w, channels).cpu().float(), labels))

    def compute_metrics(self, results: List[Tuple[Tensor, Tensor]]) -> dict:
        """Train the probe on the train images' patches, score the rest.

        Args:
            results (list[tuple[Tensor, Tensor]]): Patch features ``[N, C]``
                and patch labels ``[N]`` per image.

        Returns:
            dict: ``{'mIoU': ..., 'acc': ...}`` in percent.
        """
        train, test = self.probe.split(len(results))

        def gather(index: Tensor) -> Tuple[Tensor, Tensor]:
            feats = torch.cat([results[i][0] for i in index.tolist()])
            labels = torch.cat([results[i][1] for i in index.tolist()])
            return feats, labels

        train_x, train_y = gather(train)
        test_x, test_y = gather(test)
        pred = self.probe.fit_predict(train_x, train_y, self.num_classes,
                                      test_x)
        miou, _ = mean_iou(pred, test_y, self.num_classes)
        acc = float((pred == test_y).double().mean())
        return dict(mIoU=100.0 * miou, acc=100.0 * acc)
