# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ehm_mm.models exports every model it registers; the mask pipeline imports
only names the masking package exports."""
import ast
import os.path as osp

from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401
import ehm_mm.models as models
import ehm_mm.models.masking as masking

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def test_every_registered_model_is_exported():
    registered = {
        name for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith('ehm_mm.models.')
    }
    assert {'EHMMAE', 'EHMSimMIM', 'PipelineMaskMAE', 'EHMMAEViT',
            'EvolvedHierarchicalMasking', 'BlockwiseMasking',
            'RandomHierarchyMasking'} <= registered
    assert registered <= set(models.__all__)
    for name in models.__all__:
        assert getattr(models, name) is not None, name


def test_the_pipeline_imports_only_exported_masking_names():
    path = osp.join(REPO, 'ehm_mm', 'datasets', 'transforms',
                    'evolved_hierarchical_mask_generator.py')
    tree = ast.parse(open(path).read())
    imported = [(node.module, alias.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith('ehm_mm.models')
                for alias in node.names]
    assert imported, 'the pipeline uses the masking core'
    for module, name in imported:
        assert module == 'ehm_mm.models.masking', (module, name)
        assert name in masking.__all__, name
