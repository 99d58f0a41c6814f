# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ehm_mm: Evolved Hierarchical Masking for OpenMMLab.

Importing this package registers every mmpretrain-side module (models,
hooks, datasets, metrics) into mmpretrain's registries, so both
``import ehm_mm`` and ``custom_imports = dict(imports=['ehm_mm'])`` work.
"""
from .utils import register_checkpoint_safe_globals  # isort: skip
from . import datasets, engine, evaluation, models, retrieval  # noqa: F401
from .models.masking import (
    DepthSchedule,
    EvolvedHierarchicalMasking,
    Hierarchy,
    MaskingResult,
    attention_affinity,
    build_hierarchy,
)
from .version import __version__

register_checkpoint_safe_globals()

__all__ = [
    '__version__', 'attention_affinity', 'build_hierarchy',
    'EvolvedHierarchicalMasking', 'Hierarchy', 'MaskingResult',
    'DepthSchedule'
]
