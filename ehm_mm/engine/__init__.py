# Copyright (c) OpenMMLab. All rights reserved.
from .hooks import EvaluationSummaryHook, HierarchyVisualizationHook  # noqa: F401
