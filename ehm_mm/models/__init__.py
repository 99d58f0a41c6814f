# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .backbones import EHMMAEViT
from .masking import (
    BlockwiseMasking,
    ColorNoiseMasking,
    DepthSchedule,
    EvolvedHierarchicalMasking,
    Hierarchy,
    MaskingResult,
    MaskSource,
    MaskSpec,
    RandomHierarchyMasking,
    ShuffledAffinityMasking,
    attention_affinity,
    build_hierarchy,
)
from .selfsup import EHMMAE, EHMSimMIM, PipelineMaskMAE
from .wrappers import FSDP2Wrapper

__all__ = [
    'EHMMAEViT', 'EHMMAE', 'EHMSimMIM', 'PipelineMaskMAE',
    'EvolvedHierarchicalMasking', 'BlockwiseMasking', 'RandomHierarchyMasking',
    'ShuffledAffinityMasking', 'ColorNoiseMasking',
    'MaskSource', 'MaskSpec', 'DepthSchedule', 'Hierarchy', 'MaskingResult',
    'attention_affinity', 'build_hierarchy', 'FSDP2Wrapper'
]
