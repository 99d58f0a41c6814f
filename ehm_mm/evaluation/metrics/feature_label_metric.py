# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Base of the metrics that judge one frozen feature and one label a sample."""
from typing import Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric


class FeatureLabelMetric(BaseMetric):
    """Collects one feature vector and one class label per evaluated sample.

    :meth:`process` keeps ``(feature, label)`` per sample (the feature
    flattened to float32 on the CPU, the label an ``int``); a subclass turns
    the list into figures in ``compute_metrics``. The model's ``'predict'``
    mode must write the feature (``EHMMAE`` writes ``feature``) and the data
    sample must carry exactly one ``gt_label``.

    Args:
        feature_key (str): Field of the feature. Defaults to ``'feature'``.
        collect_device (str): Where the features of all ranks are gathered
            before the metric is computed. Defaults to ``'cpu'``.
        prefix (str, optional): Prefix of the metric names; None uses the
            subclass's ``default_prefix``. Defaults to None.
    """

    def __init__(self,
                 feature_key: str = 'feature',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.feature_key = feature_key

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store the feature and label of each sample.

        Args:
            data_batch (dict): Unused; the predictions carry everything.
            data_samples (Sequence[dict]): Predictions, each with the
                ``feature_key`` field and ``gt_label``.
        """
        name = self.__class__.__name__
        for sample in data_samples:
            for key in (self.feature_key, 'gt_label'):
                if key not in sample:
                    raise KeyError(f'{name} needs `{key}` in each data '
                                   f'sample, found {sorted(sample)}')
            feature = torch.as_tensor(sample[self.feature_key]).detach()
            label = torch.as_tensor(sample['gt_label']).reshape(-1)
            if label.numel() != 1:
                raise ValueError(f'{name} needs one label per sample, got '
                                 f'{label.numel()}')
            self.results.append((feature.flatten().cpu().float(),
                                 int(label[0])))
