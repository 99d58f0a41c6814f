# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Load tools/analysis/masking_study.py as a module, for the study tests."""
import importlib.util
import os.path as osp
from types import ModuleType

#: The study tool's path.
TOOL = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools', 'analysis',
    'masking_study.py')


def load_masking_study() -> ModuleType:
    """Execute the study tool into a fresh module (never a shared one, so a
    test that patches its attributes leaves the others' copies alone).

    Returns:
        ModuleType: The tool's module.
    """
    spec = importlib.util.spec_from_file_location('masking_study', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
