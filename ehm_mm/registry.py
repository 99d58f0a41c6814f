# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The ``ehm_mm`` scope: registry nodes below mmpretrain's.

ehm_mm registers its modules into mmpretrain's registries (its configs run
with ``default_scope='mmpretrain'``). A config that inherits one of ours
through ``_base_ = 'ehm_mm::...'`` gets ``_scope_='ehm_mm'`` written into
every inherited dict with a ``type``, and mmengine then imports
``ehm_mm.registry`` and looks for registries of that scope in its registry
tree. These nodes are those registries: each is a child of mmpretrain's
node of the same kind, so a look-up in the ``ehm_mm`` scope finds what
ehm_mm, mmpretrain and mmengine register.

More details on registry trees:
https://mmengine.readthedocs.io/en/latest/advanced_tutorials/registry.html
"""
from mmengine.registry import Registry
from mmpretrain import registry as mmpretrain

#: The scope name: the package name used before ``::`` in ``_base_``.
SCOPE = 'ehm_mm'

__all__ = [
    'SCOPE', 'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS',
    'LOG_PROCESSORS', 'OPTIMIZERS', 'OPTIM_WRAPPERS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS',
    'WEIGHT_INITIALIZERS', 'TASK_UTILS', 'METRICS', 'EVALUATORS',
    'VISUALIZERS', 'VISBACKENDS'
]

# Every node imports the package (and so registers its modules) when used.
_LOCATIONS = ['ehm_mm']

RUNNERS = Registry(
    'runner', parent=mmpretrain.RUNNERS, scope=SCOPE, locations=_LOCATIONS)
RUNNER_CONSTRUCTORS = Registry(
    'runner constructor',
    parent=mmpretrain.RUNNER_CONSTRUCTORS,
    scope=SCOPE,
    locations=_LOCATIONS)
LOOPS = Registry(
    'loop', parent=mmpretrain.LOOPS, scope=SCOPE, locations=_LOCATIONS)
HOOKS = Registry(
    'hook', parent=mmpretrain.HOOKS, scope=SCOPE, locations=_LOCATIONS)
LOG_PROCESSORS = Registry(
    'log processor',
    parent=mmpretrain.LOG_PROCESSORS,
    scope=SCOPE,
    locations=_LOCATIONS)
OPTIMIZERS = Registry(
    'optimizer',
    parent=mmpretrain.OPTIMIZERS,
    scope=SCOPE,
    locations=_LOCATIONS)
OPTIM_WRAPPERS = Registry(
    'optim_wrapper',
    parent=mmpretrain.OPTIM_WRAPPERS,
    scope=SCOPE,
    locations=_LOCATIONS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor',
    parent=mmpretrain.OPTIM_WRAPPER_CONSTRUCTORS,
    scope=SCOPE,
    locations=_LOCATIONS)
PARAM_SCHEDULERS = Registry(
    'parameter scheduler',
    parent=mmpretrain.PARAM_SCHEDULERS,
    scope=SCOPE,
    locations=_LOCATIONS)
DATASETS = Registry(
    'dataset', parent=mmpretrain.DATASETS, scope=SCOPE, locations=_LOCATIONS)
DATA_SAMPLERS = Registry(
    'data sampler',
    parent=mmpretrain.DATA_SAMPLERS,
    scope=SCOPE,
    locations=_LOCATIONS)
TRANSFORMS = Registry(
    'transform',
    parent=mmpretrain.TRANSFORMS,
    scope=SCOPE,
    locations=_LOCATIONS)
MODELS = Registry(
    'model', parent=mmpretrain.MODELS, scope=SCOPE, locations=_LOCATIONS)
MODEL_WRAPPERS = Registry(
    'model_wrapper',
    parent=mmpretrain.MODEL_WRAPPERS,
    scope=SCOPE,
    locations=_LOCATIONS)
WEIGHT_INITIALIZERS = Registry(
    'weight initializer',
    parent=mmpretrain.WEIGHT_INITIALIZERS,
    scope=SCOPE,
    locations=_LOCATIONS)
TASK_UTILS = Registry(
    'task util',
    parent=mmpretrain.TASK_UTILS,
    scope=SCOPE,
    locations=_LOCATIONS)
METRICS = Registry(
    'metric', parent=mmpretrain.METRICS, scope=SCOPE, locations=_LOCATIONS)
EVALUATORS = Registry(
    'evaluator',
    parent=mmpretrain.EVALUATORS,
    scope=SCOPE,
    locations=_LOCATIONS)
VISUALIZERS = Registry(
    'visualizer',
    parent=mmpretrain.VISUALIZERS,
    scope=SCOPE,
    locations=_LOCATIONS)
VISBACKENDS = Registry(
    'vis_backend',
    parent=mmpretrain.VISBACKENDS,
    scope=SCOPE,
    locations=_LOCATIONS)
