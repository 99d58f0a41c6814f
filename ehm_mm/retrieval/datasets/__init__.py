# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Retrieval benchmarks in their standard layouts, registered in DATASETS.

The common machinery (role indices, distractor and whitening folders, layout
errors) is in ``base_retrieval_dataset``.
"""
from .copydays import COPYDAYS_BLOCKS, Copydays  # noqa: F401
from .holidays import INRIAHolidays  # noqa: F401
from .revisited_oxford_paris import ROxford5k, RParis6k  # noqa: F401
from .transforms import CropToBBox, PackRetrievalInputs  # noqa: F401
from .ukbench import UKBench  # noqa: F401
