# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .backbones import EHMMAEViT
from .masking import (
    BlockwiseMasking,
    DepthSchedule,
    EvolvedHierarchicalMasking,
    Hierarchy,
    MaskingResult,
    MaskSource,
    MaskSpec,
    RandomHierarchyMasking,
    attention_affinity,
    build_hierarchy,
)
from .selfsup import EHMMAE, EHMSimMIM, PipelineMaskMAE
from .wrappers import FSDP2Wrapper

__all__ = [
    'EHMMAEViT', 'EHMMAE', 'EHMSimMIM', 'PipelineMaskMAE',
    'EvolvedHierarchicalMasking', 'BlockwiseMasking', 'RandomHierarchyMasking',
    'MaskSource', 'MaskSpec', 'DepthSchedule', 'Hierarchy', 'MaskingResult',
    'attention_affinity', 'build_hierarchy', 'FSDP2Wrapper'
]
