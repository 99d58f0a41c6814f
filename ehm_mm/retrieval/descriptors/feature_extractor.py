# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Global image descriptors from a pretrained ViT, for retrieval."""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from .pooling import parse_pooling, pool_tokens

#: Name of the data-sample field that carries the descriptor.
FEATURE_FIELD = 'retrieval_feature'


@MODELS.register_module()
class RetrievalFeatureExtractor(BaseModel):
    """L2-normalised global descriptors from a ViT encoder.

    The encoder (an mmpretrain ``VisionTransformer``, whose keys equal
    ``MAEViT``'s) returns all tokens of its last layer after the final norm;
    they are pooled (CLS token, mean or GeM of the patch tokens, or a
    concatenation), averaged over the input scales and L2-normalised.

    Load pretrained weights with
    :func:`ehm_mm.downstream.load_encoder_weights` on
    ``model.backbone`` (what ``tools/retrieval.py`` does), or let
    ``tools/test.py`` load the student ``backbone.*`` weights of a checkpoint
    by name.

    Args:
        backbone (dict): Config of the encoder, e.g.
            ``dict(type='VisionTransformer', arch='b', patch_size=16)``.
            ``out_type`` must be ``'raw'`` (it is set when absent).
        pooling (str | Sequence[str]): ``'cls'``, ``'avg'``, ``'gem'`` or
            several of them concatenated (``'cls+gem'`` or a list).
            Defaults to ``'cls'``.
        gem_p (float): GeM exponent. Defaults to 3.0.
        scales (Sequence[float]): Input rescaling factors; the descriptors
            of all scales are averaged before normalisation (e.g.
            ``(1, 2 ** -0.5, 0.5)``). Defaults to ``(1.0, )``.
        data_preprocessor (dict, optional): Config of the data
            preprocessor. Defaults to ``ClsDataPreprocessor`` with ImageNet
            mean / std and BGR-to-RGB conversion when None.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 pooling: Union[str, Sequence[str]] = 'cls',
                 gem_p: float = 3.0,
                 scales: Sequence[float] = (1.0, ),
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(
                type='ClsDataPreprocessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                to_rgb=True)
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not isinstance(backbone, dict):
            raise TypeError('backbone must be a config dict, got '
                            f'{type(backbone).__name__}')
        backbone = dict(backbone)
        out_type = backbone.setdefault('out_type', 'raw')
        if out_type != 'raw':
            raise ValueError("backbone.out_type must be 'raw' (all tokens "
                             f'are pooled here), got {out_type!r}')
        self.backbone = MODELS.build(backbone)
        self.num_extra_tokens = int(
            getattr(self.backbone, 'num_extra_tokens', 1))
        self.pooling = parse_pooling(pooling)
        if 'cls' in self.pooling and not getattr(self.backbone,
                                                 'with_cls_token', True):
            raise ValueError("pooling 'cls' needs a backbone with a CLS "
                             'token (with_cls_token=True)')
        if gem_p <= 0:
            raise ValueError(f'gem_p must be > 0, got {gem_p}')
        self.gem_p = float(gem_p)
        scales = tuple(float(s) for s in scales)
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f'scales must be positive numbers, got {scales}')
        self.scales = scales

    def _single_scale(self, inputs: Tensor) -> Tensor:
        """Unnormalised descriptors of a batch at its own size."""
        tokens = self.backbone(inputs)[-1]  # (B, E + N, C)
        return pool_tokens(tokens, self.pooling, self.num_extra_tokens,
                           self.gem_p)

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """Multi-scale, L2-normalised descriptors.

        Args:
            inputs (Tensor): Preprocessed images of shape (B, 3, H, W).

        Returns:
            Tensor: Descriptors of shape (B, D), unit L2 norm.
        """
        feature = None
        for scale in self.scales:
            x = inputs
            if scale != 1.0:
                x = F.interpolate(
                    inputs,
                    scale_factor=scale,
                    mode='bilinear',
                    align_corners=False)
            pooled = self._single_scale(x)
            feature = pooled if feature is None else feature + pooled
        feature = feature / len(self.scales)
        return F.normalize(feature, p=2, dim=1)

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """Compute descriptors.

        Args:
            inputs (Tensor): Preprocessed images of shape (B, 3, H, W).
            data_samples (list[DataSample], optional): Per-image samples;
                with ``mode='predict'`` each gets a ``retrieval_feature``
                field. Defaults to None.
            mode (str): ``'tensor'`` returns the (B, D) descriptors;
                ``'predict'`` returns the data samples with the descriptor
                set. Defaults to ``'tensor'``.

        Returns:
            Tensor | list[DataSample]: See ``mode``.
        """
        if mode == 'tensor':
            return self.extract_feat(inputs)
        if mode == 'predict':
            with torch.no_grad():
                features = self.extract_feat(inputs)
            if data_samples is None:
                data_samples = [DataSample() for _ in range(len(features))]
            if len(data_samples) != len(features):
                raise ValueError(f'{len(data_samples)} data samples for '
                                 f'{len(features)} images')
            for sample, feature in zip(data_samples, features):
                sample.set_field(feature, FEATURE_FIELD, field_type='data')
            return data_samples
        raise ValueError(f"mode must be 'tensor' or 'predict' (retrieval "
                         f'feature extraction has no loss), got {mode!r}')
