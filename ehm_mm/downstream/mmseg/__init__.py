# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""mmseg modules for EHM transfer; registered into mmseg's registries.

Import with ``custom_imports=dict(imports=['ehm_mm.downstream.mmseg'],
allow_failed_imports=False)`` in an mmseg config.
"""
from .strict_mae import StrictMAE

__all__ = ['StrictMAE']
