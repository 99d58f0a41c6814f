# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .fsdp2_runner import FSDP2Runner  # noqa: F401
from .hooks import (  # noqa: F401
    AtomicCheckpointHook,
    DivergenceGuardHook,
    EvaluationSummaryHook,
    HierarchyVisualizationHook,
    MaskProgressHook,
    StageMetricsHook,
    TrainingDivergedError,
)
from .optim_wrappers import (  # noqa: F401
    NonFiniteSkipAmpOptimWrapper,
    NonFiniteSkipOptimWrapper,
)
