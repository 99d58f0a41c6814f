# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Image retrieval benchmarks of a pretrained encoder, in one subpackage.

- ``descriptors``: ``RetrievalFeatureExtractor`` (a registered model) and
  the token pooling (CLS, mean, GeM) it uses;
- ``datasets``: ROxford5k, RParis6k, Copydays, INRIA Holidays and UKBench in
  their standard layouts, with their transforms;
- ``metrics``: ``RevisitedMAP``, ``InstanceMAP`` and ``UKBenchScore`` on top
  of a numpy scoring core (``metrics.ranking_metrics``);
- ``search`` (exact torch or faiss, the same ranking) and ``whitening``
  (PCA), pure torch / numpy.

``import ehm_mm`` does not import this package. Importing it registers the
model, datasets, transforms and metrics in mmpretrain's registries; the
retrieval configs ask for it with
``custom_imports = dict(imports=['ehm_mm.retrieval'])``. Encoder weights are
loaded by :func:`ehm_mm.downstream.load_encoder_weights`, the loader every
consumer of a pretrained checkpoint shares.
"""
from . import datasets, descriptors, metrics  # noqa: F401  (registration)
