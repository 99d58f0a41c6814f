# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Layer-wise learning rate decay for detectors with a ViT backbone."""
from functools import partial
from typing import Callable, List, Optional

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.engine.optimizers import (
    LearningRateDecayOptimWrapperConstructor,
)
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(
        LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-decay constructor, for models like Mask R-CNN.

    mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` asks the
    *model* for ``get_layer_depth``; an mmdet detector has none, and mmdet's
    own constructor only knows ConvNeXt. This one asks ``model.backbone``
    (e.g. :class:`ViTDetBackbone`), with the ``backbone.`` prefix: the patch
    embedding and position embedding get depth 0, block ``i`` depth
    ``i + 1``, and everything outside the backbone (neck, heads) the full
    learning rate. The ``lr`` of a parameter at depth ``d`` of ``D`` is
    ``base_lr * layer_decay_rate ** (D - d - 1)``.

    ``paramwise_cfg`` takes mmpretrain's keys: ``layer_decay_rate``,
    ``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult`` and
    ``custom_keys`` (``decay_mult`` only).
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   get_layer_depth: Optional[Callable] = None,
                   **kwargs) -> None:
        """Add the parameters of ``module`` with layer-decayed lr.

        Args:
            params (list[dict]): Parameter groups, extended in place.
            module (nn.Module): The detector (at the top-level call).
            prefix (str): Name prefix of ``module``. Defaults to ''.
            get_layer_depth (Callable, optional): Depth function; at the
                top level it is taken from ``module.backbone``.
                Defaults to None.
            **kwargs: Passed on to mmpretrain's constructor.

        Raises:
            TypeError: If the model has no backbone with a
                ``get_layer_depth`` method.
        """
        if get_layer_depth is None:
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(
                    f'{type(self).__name__} needs model.backbone with a '
                    '`get_layer_depth` method (e.g. ViTDetBackbone); got '
                    f'{type(backbone).__name__}.')
            get_layer_depth = partial(
                backbone.get_layer_depth, prefix='backbone.')
        super().add_params(
            params,
            module,
            prefix=prefix,
            get_layer_depth=get_layer_depth,
            **kwargs)
