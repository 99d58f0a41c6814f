# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .backbones import EHMMAEViT  # noqa: F401
from .masking import (  # noqa: F401
    DepthSchedule,
    EvolvedHierarchicalMasking,
    Hierarchy,
    MaskingResult,
    attention_affinity,
    build_hierarchy,
)
from .selfsup import EHMMAE  # noqa: F401
