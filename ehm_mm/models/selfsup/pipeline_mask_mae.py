# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MAE that takes its masks from the data pipeline."""
from typing import Dict, List

import torch
from mmpretrain.models import MAE
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..backbones import EHMMAEViT


@MODELS.register_module()
class PipelineMaskMAE(MAE):
    """MAE with the masks of ``data_samples[i].mask``, as SimMIM takes them.

    With ``EvolvedHierarchicalMaskGenerator`` in the pipeline (mask patch =
    model patch = the ViT's patch size) this is the pixel-cue arm of EHM for
    MAE: trees from each image's colour and texture, no teacher. Any
    transform that writes an ``[h, w]`` (or ``[N]``) mask with the same
    masked count for every image works. The encoder keeps the visible
    patches in raster order (MAE's order of visible tokens does not change
    its result: positions are embedded before the tokens are gathered).

    Args:
        backbone (dict): Config of the encoder; must build an
            :class:`~ehm_mm.models.EHMMAEViT` (a ``MAEViT`` that takes a
            mask tensor).
        **kwargs: The other arguments of :class:`~mmpretrain.models.MAE`.
    """

    def __init__(self, backbone: dict, **kwargs) -> None:
        super().__init__(backbone=backbone, **kwargs)
        if not isinstance(self.backbone, EHMMAEViT):
            raise TypeError(
                'model.backbone must build an EHMMAEViT (a MAEViT that takes '
                f'its mask from outside), got {type(self.backbone).__name__}')

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """MAE's training step with the pipeline's masks.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample]): Each with ``mask`` ``[h, w]``
                or ``[N]`` on the patch grid, nonzero = masked.
            **kwargs: Unused.

        Returns:
            Dict[str, torch.Tensor]: ``loss``.
        """
        if not data_samples or 'mask' not in data_samples[0]:
            raise ValueError(
                'PipelineMaskMAE needs data_samples[i].mask: put a mask '
                'generator (e.g. EvolvedHierarchicalMaskGenerator) before '
                'PackInputs in the train pipeline')
        mask = torch.stack([s.mask for s in data_samples]).flatten(1)
        num_patches = self.backbone.num_patches
        if mask.shape[1] != num_patches:
            raise ValueError(
                f'the pipeline masks have {mask.shape[1]} entries per image, '
                f'the encoder has {num_patches} patches: set the mask '
                'generator to the patch grid (mask_patch_size = '
                'model_patch_size = patch size)')
        latent, mask, ids_restore = self.backbone(
            inputs, mask=mask.to(inputs.device))
        pred = self.neck(latent, ids_restore)
        loss = self.head.loss(pred, inputs, mask)
        return dict(loss=loss)
