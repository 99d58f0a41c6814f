# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ehm_mm: Evolved Hierarchical Masking for OpenMMLab.

Importing this package registers the pretraining modules (models, hooks,
``SyntheticShapes``, the ``HierarchyIoU`` / ``KNNAccuracy`` metrics) into
mmpretrain's registries, so both ``import ehm_mm`` and
``custom_imports = dict(imports=['ehm_mm'])`` work, and makes mmengine
checkpoints loadable under torch >= 2.6 (weights-only, with clear errors for
damaged files). The EHM core's API
(``ehm_mm.models.masking``) is available at the top level. The retrieval
benchmarks (``ehm_mm.retrieval``) and the downstream backbones
(``ehm_mm.downstream.mmseg`` / ``.mmdet``) register when imported.

It also makes ehm_mm an OpenMMLab package other projects can build on:
``_base_ = 'ehm_mm::<folder>/<config>.py'`` resolves (``ehm_mm.registry``
holds the ``ehm_mm`` scope such configs are tagged with), and the
registered collate functions accept the ``_scope_`` tag that mmengine
writes into inherited ``collate_fn`` dicts, so a stock
``Runner.from_cfg(Config.fromfile(cfg))`` trains our configs.
"""
from .utils import (  # isort: skip
    register_checkpoint_loader,
    register_checkpoint_safe_globals,
    register_config_package,
    register_scope_tolerant_collates,
)
from . import datasets, engine, evaluation, models, registry  # noqa: F401
from .models.masking import *  # noqa: F401,F403  (the EHM core's API)
from .version import __version__  # noqa: F401

register_checkpoint_safe_globals()
register_checkpoint_loader()
register_config_package()
# After `datasets`: its collate functions are registered by then.
register_scope_tolerant_collates()
