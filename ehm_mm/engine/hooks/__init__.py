# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .evaluation_summary_hook import EvaluationSummaryHook
from .hierarchy_visualization_hook import HierarchyVisualizationHook

__all__ = ['EvaluationSummaryHook', 'HierarchyVisualizationHook']
