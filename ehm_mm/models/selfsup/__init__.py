# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .ehm_mae import EHMMAE
from .ehm_simmim import EHMSimMIM
from .pipeline_mask_mae import PipelineMaskMAE

__all__ = ['EHMMAE', 'EHMSimMIM', 'PipelineMaskMAE']
