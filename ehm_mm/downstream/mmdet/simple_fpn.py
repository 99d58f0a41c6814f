# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ViTDet's simple feature pyramid: all levels from one stride-16 map."""
from typing import List, Optional, Sequence, Tuple

import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Simple feature pyramid of ViTDet (Li et al., ECCV 2022).

    A plain ViT has a single stride-16 feature map. Each pyramid level is
    made from that map alone, with no top-down path:

    - scale 4: 2x2 transposed conv (C -> C/2), norm, GELU, 2x2 transposed
      conv (C/2 -> C/4), i.e. stride 4;
    - scale 2: 2x2 transposed conv (C -> C/2), stride 8;
    - scale 1: the map itself, stride 16;
    - scale 0.5: 2x2 max pooling, stride 32;

    then a 1x1 conv and a 3x3 conv to ``out_channels``, each followed by
    ``norm_cfg`` and no activation (as in detectron2's
    ``SimpleFeaturePyramid``). Levels beyond the scales (``num_outs``) are
    1x1 max pools with stride 2 of the last one (P6 for Mask R-CNN).

    Args:
        backbone_channel (int): Channels C of the backbone feature map.
        out_channels (int): Channels of every output level.
        num_outs (int): Number of output levels, at least
            ``len(scale_factors)``. Defaults to 5.
        scale_factors (Sequence[float]): Resolution of each level relative
            to the input map, from {4, 2, 1, 0.5}, finest first.
            Defaults to ``(4.0, 2.0, 1.0, 0.5)``.
        norm_cfg (dict): Norm after each conv (and inside the scale-4
            branch). Defaults to ``dict(type='LN2d', eps=1e-6)``.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to None.
    """

    def __init__(self,
                 backbone_channel: int,
                 out_channels: int,
                 num_outs: int = 5,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        unknown = [s for s in scale_factors if s not in (4.0, 2.0, 1.0, 0.5)]
        if unknown or not scale_factors:
            raise ValueError('scale_factors must be a non-empty subset of '
                             f'(4, 2, 1, 0.5), got {tuple(scale_factors)}.')
        if num_outs < len(scale_factors):
            raise ValueError(f'num_outs ({num_outs}) is smaller than the '
                             f'{len(scale_factors)} scale factors.')
        self.backbone_channel = backbone_channel
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.scale_factors = tuple(float(s) for s in scale_factors)

        self.rescales = nn.ModuleList()
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for scale in self.scale_factors:
            rescale, channels = self._build_rescale(scale, norm_cfg)
            self.rescales.append(rescale)
            self.lateral_convs.append(
                ConvModule(
                    channels,
                    out_channels,
                    1,
                    norm_cfg=norm_cfg,
                    act_cfg=None,
                    inplace=False))
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    norm_cfg=norm_cfg,
                    act_cfg=None,
                    inplace=False))

    def _build_rescale(self, scale: float,
                       norm_cfg: dict) -> Tuple[nn.Module, int]:
        """The resampling branch of one level and its output channels."""
        dim = self.backbone_channel
        if scale == 4.0:
            return nn.Sequential(
                nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
                build_norm_layer(norm_cfg, dim // 2)[1], nn.GELU(),
                nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)), dim // 4
        if scale == 2.0:
            return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), dim // 2
        if scale == 1.0:
            return nn.Identity(), dim
        return nn.MaxPool2d(kernel_size=2, stride=2), dim

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Build the pyramid from the last backbone feature map.

        Args:
            inputs (Sequence[Tensor]): Backbone outputs; only the last,
                shape (B, C, H, W), is used.

        Returns:
            tuple[Tensor]: ``num_outs`` maps with ``out_channels``
            channels, finest first.
        """
        feature = inputs[-1]
        if feature.shape[1] != self.backbone_channel:
            raise ValueError(f'Expected {self.backbone_channel} input '
                             f'channels, got {feature.shape[1]}.')
        outs: List[Tensor] = [
            fpn_conv(lateral(rescale(feature)))
            for rescale, lateral, fpn_conv in zip(
                self.rescales, self.lateral_convs, self.fpn_convs)
        ]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return tuple(outs)
