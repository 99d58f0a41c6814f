# Copyright (c) OpenMMLab. All rights reserved.
from .evaluation_summary_hook import EvaluationSummaryHook
from .hierarchy_visualization_hook import HierarchyVisualizationHook

__all__ = ['EvaluationSummaryHook', 'HierarchyVisualizationHook']
