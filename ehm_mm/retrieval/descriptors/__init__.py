# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Global image descriptors from a ViT encoder."""
from .feature_extractor import FEATURE_FIELD, RetrievalFeatureExtractor
from .pooling import POOLING_METHODS, gem_pool, parse_pooling, pool_tokens

__all__ = [
    'FEATURE_FIELD', 'POOLING_METHODS', 'RetrievalFeatureExtractor',
    'gem_pool', 'parse_pooling', 'pool_tokens'
]
