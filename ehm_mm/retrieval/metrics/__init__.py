# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Retrieval metrics (registered in METRICS) on a numpy scoring core.

``ranking_metrics`` scores ranked lists (average precision, the revisited
setups, the N-S score) without any OpenMMLab glue; ``base_retrieval_metric``
gathers descriptors by role, whitens and searches; ``table`` prints results.
"""
from .instance_map import InstanceMAP  # noqa: F401
from .revisited_map import RevisitedMAP  # noqa: F401
from .table import format_table  # noqa: F401
from .ukbench_score import UKBenchScore  # noqa: F401
