# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Image retrieval: descriptors, whitening, search and ranking scores.

The torch / numpy algorithms (``pooling``, ``whitening``, ``search``,
``ranking_metrics``) do not depend on OpenMMLab; ``feature_extractor``
registers the ``RetrievalFeatureExtractor`` model in mmpretrain's registry and
``encoder_weights`` loads EHM / MAE checkpoints into it.
"""
from .encoder_weights import (
    ENCODER_PREFIXES,
    load_encoder_weights,
    select_encoder_state_dict,
)
from .feature_extractor import FEATURE_FIELD, RetrievalFeatureExtractor
from .pooling import gem_pool, parse_pooling, pool_tokens
from .ranking_metrics import (
    REVISITED_SETUPS,
    junk_free_positive_ranks,
    mean_average_precision,
    ns_score,
    precision_at_ks,
    query_average_precision,
    revisited_ground_truth,
    trapezoidal_average_precision,
)
from .search import faiss_available, faiss_search, search, torch_search
from .table import format_table
from .whitening import PCAWhitening

__all__ = [
    'ENCODER_PREFIXES', 'FEATURE_FIELD', 'PCAWhitening', 'REVISITED_SETUPS',
    'RetrievalFeatureExtractor', 'faiss_available', 'faiss_search',
    'format_table', 'gem_pool', 'junk_free_positive_ranks',
    'load_encoder_weights', 'mean_average_precision', 'ns_score',
    'parse_pooling', 'pool_tokens', 'precision_at_ks',
    'query_average_precision', 'revisited_ground_truth', 'search',
    'select_encoder_state_dict', 'torch_search',
    'trapezoidal_average_precision'
]
