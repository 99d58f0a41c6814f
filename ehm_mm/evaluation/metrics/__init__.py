# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .base_retrieval_metric import BaseRetrievalMetric  # noqa: F401
from .hierarchy_iou import HierarchyIoU  # noqa: F401
from .instance_map import InstanceMAP  # noqa: F401
from .knn_accuracy import KNNAccuracy  # noqa: F401
from .revisited_map import RevisitedMAP  # noqa: F401
from .ukbench_score import UKBenchScore  # noqa: F401
