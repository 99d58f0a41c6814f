# Copyright (c) OpenMMLab. All rights reserved.
from .masking import (  # noqa: F401
    DepthSchedule,
    EvolvedHierarchicalMasking,
    Hierarchy,
    MaskingResult,
    attention_affinity,
    build_hierarchy,
)
