# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Retrieval benchmarks in their standard layouts, registered in DATASETS."""
from .base_retrieval_dataset import BaseRetrievalDataset, list_images
from .copydays import COPYDAYS_BLOCKS, Copydays
from .holidays import INRIAHolidays
from .revisited_oxford_paris import RevisitedOxfordParis, ROxford5k, RParis6k
from .transforms import RETRIEVAL_META_KEYS, CropToBBox, PackRetrievalInputs
from .ukbench import UKBench

__all__ = [
    'BaseRetrievalDataset', 'COPYDAYS_BLOCKS', 'Copydays', 'CropToBBox',
    'INRIAHolidays', 'PackRetrievalInputs', 'RETRIEVAL_META_KEYS',
    'ROxford5k', 'RParis6k', 'RevisitedOxfordParis', 'UKBench', 'list_images'
]
