# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .atomic_checkpoint_hook import AtomicCheckpointHook
from .divergence_guard_hook import DivergenceGuardHook, TrainingDivergedError
from .evaluation_summary_hook import EvaluationSummaryHook
from .hierarchy_visualization_hook import HierarchyVisualizationHook
from .mask_progress_hook import MaskProgressHook, find_mask_generators
from .stage_metrics_hook import StageMetricsHook

__all__ = [
    'AtomicCheckpointHook', 'DivergenceGuardHook', 'EvaluationSummaryHook',
    'HierarchyVisualizationHook', 'MaskProgressHook', 'StageMetricsHook',
    'TrainingDivergedError', 'find_mask_generators'
]
