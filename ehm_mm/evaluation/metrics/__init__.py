# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .feature_label_metric import FeatureLabelMetric  # noqa: F401
from .hierarchy_iou import HierarchyIoU  # noqa: F401
from .knn_accuracy import KNNAccuracy  # noqa: F401
from .knn_bank_accuracy import KNNBankAccuracy  # noqa: F401
from .linear_probe import (  # noqa: F401
    LinearProbe,
    LinearProbeAccuracy,
    LinearProbeMixin,
)
from .patch_seg_probe import PatchSegProbe  # noqa: F401
