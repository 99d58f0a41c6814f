# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The plain ViT backbone of ViTDet, for mmdet, built on mmpretrain's ViTSAM.

ViTDet (Li et al., ECCV 2022) runs a plain, MAE-pretrained ViT at 1024 px
with window attention in most blocks and global attention in a few, plus
decomposed relative position biases, and feeds the last feature map to a
simple feature pyramid. mmpretrain's ``ViTSAM`` (SAM's image encoder) is
that architecture already; two things are missing for detection transfer:

- stochastic depth on the attention branch (``ViTSAM`` only drops the MLP
  branch; ViTDet drops both);
- loading an MAE-layout encoder (CLS token, ``(1, 1 + N, C)`` position
  embedding, final norm) with every key accounted for.
"""
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from mmengine.model import ModuleList
from mmpretrain.models.backbones.vit_sam import (
    TransformerEncoderLayer,
    ViTSAM,
    window_partition,
    window_unpartition,
)
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor, nn

from ..accounted_pretrained import AccountedPretrainedMixin


class ViTDetEncoderLayer(TransformerEncoderLayer):
    """``ViTSAM``'s encoder layer with stochastic depth on both branches.

    Args:
        drop_path_rate (float): Stochastic depth rate of the attention and
            MLP branches. Defaults to 0.
        **kwargs: The other arguments of mmpretrain's ViTSAM
            ``TransformerEncoderLayer``.
    """

    def __init__(self, drop_path_rate: float = 0., **kwargs) -> None:
        super().__init__(drop_path_rate=drop_path_rate, **kwargs)
        self.drop_path = (
            DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        """Window or global attention, then the MLP.

        Args:
            x (Tensor): Tokens on the patch grid, shape (B, H, W, C).

        Returns:
            Tensor: Same shape as ``x``.
        """
        shortcut = x
        x = self.ln1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw,
                                   (height, width))
        x = shortcut + self.drop_path(x)
        # mmcv's FFN applies its own DropPath before adding the identity.
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class ViTDetBackbone(AccountedPretrainedMixin, ViTSAM):
    """Plain ViT with window + global attention, as in ViTDet.

    Outputs the feature maps of ``out_indices`` as (B, C, H/16, W/16)
    tensors (ViTDet uses the last one). Its weights use mmpretrain names
    (``layers.N.ln1``, ``layers.N.attn.qkv``, ...); the position embedding
    has no CLS slot and lives on the ``img_size`` patch grid.

    With ``init_cfg=dict(type='Pretrained', checkpoint=...)`` it loads an
    official-MAE / timm checkpoint (``ehm2timm.py`` output, or the official
    ``mae_pretrain_vit_base.pth``), an EHM checkpoint (``backbone.*``, or
    the EMA teacher with ``checkpoint_source='teacher'``) or an
    encoder-only one. The CLS slot of the position embedding is dropped
    and the patch positions are resized (``interpolate_mode``) to the
    ``img_size`` grid. Every key must then be loaded or be an allowed one
    (see :class:`ehm_mm.downstream.mmseg.StrictMAE`), else
    :class:`ValueError`.

    Args:
        arch (str | dict): ``'base'``, ``'large'`` or ``'huge'`` (global
            attention in blocks 2, 5, 8, 11 for base, as ViTDet) or a dict
            with ``embed_dims``, ``num_layers``, ``num_heads``,
            ``feedforward_channels`` and ``global_attn_indexes``.
            Defaults to ``'base'``.
        img_size (int): Training input size; sets the position embedding
            grid and the size of the global blocks' relative positions.
            Defaults to 1024.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose output is
            returned. Defaults to -1 (the last).
        drop_rate (float): Dropout after the position embedding and in the
            MLP. Defaults to 0.
        drop_path_rate (float): Maximum stochastic depth rate, reached
            linearly at the last block. Defaults to 0.1.
        qkv_bias (bool): Bias in the qkv projection. Defaults to True.
        use_rel_pos (bool): Decomposed relative position biases (new
            weights, zero-initialised). Defaults to True.
        window_size (int): Window size of the window-attention blocks.
            Defaults to 14.
        norm_cfg (dict): Norm layer config. Defaults to
            ``dict(type='LN', eps=1e-6)`` as in MAE pretraining.
        frozen_stages (int): Freeze the patch embedding and the first
            ``frozen_stages`` blocks; -1 freezes nothing. Defaults to -1.
        interpolate_mode (str): Position embedding resize mode.
            Defaults to ``'bicubic'``.
        layer_cfgs (dict | Sequence[dict]): Extra arguments for every (or
            each) block. Defaults to ``dict()``.
        checkpoint_source (str): ``'student'`` or ``'teacher'`` encoder of
            an EHM checkpoint. Defaults to ``'student'``.
        allowed_missing (Sequence[str], optional): New weights (regular
            expressions); None means :attr:`NEW_WEIGHTS`. Defaults to None.
        allowed_unexpected (Sequence[str], optional): Unused pretrained
            weights; None means :attr:`UNUSED_WEIGHTS`. Defaults to None.
        init_cfg (dict, optional): Initialization config.
            Defaults to None.
    """

    #: Decomposed relative position tables (zero-initialised, as ViTDet).
    NEW_WEIGHTS = (r'layers\.\d+\.attn\.rel_pos_[hw]', )
    #: ViTDet has no CLS token and no final norm (same as detectron2's).
    UNUSED_WEIGHTS = (r'cls_token', r'ln1\.(weight|bias)')

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 1024,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 qkv_bias: bool = True,
                 use_rel_pos: bool = True,
                 window_size: int = 14,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 layer_cfgs: Union[dict, Sequence[dict]] = dict(),
                 checkpoint_source: str = 'student',
                 allowed_missing: Optional[Sequence[str]] = None,
                 allowed_unexpected: Optional[Sequence[str]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        # ViTSAM without its neck (out_channels=0), all tokens out, always
        # an absolute position embedding; freezing happens below.
        super().__init__(
            arch=arch, img_size=img_size, patch_size=patch_size,
            in_channels=in_channels, out_channels=0,
            out_indices=list(out_indices), out_type='raw',
            drop_rate=drop_rate, drop_path_rate=drop_path_rate,
            qkv_bias=qkv_bias, use_abs_pos=True, use_rel_pos=use_rel_pos,
            window_size=window_size, norm_cfg=norm_cfg, frozen_stages=-1,
            interpolate_mode=interpolate_mode, init_cfg=init_cfg)
        # ViTSAM hard-wires its layer class; rebuild the blocks with the
        # same settings and stochastic depth on the attention branch too.
        if isinstance(layer_cfgs, dict):
            layer_cfgs = [layer_cfgs] * self.num_layers
        if len(layer_cfgs) != self.num_layers:
            raise ValueError(f'layer_cfgs has {len(layer_cfgs)} entries for '
                             f'{self.num_layers} layers.')
        rates = np.linspace(0, drop_path_rate, self.num_layers)
        self.layers = ModuleList()
        for i in range(self.num_layers):
            layer_cfg = dict(
                embed_dims=self.embed_dims,
                num_heads=self.arch_settings['num_heads'],
                feedforward_channels=self.
                arch_settings['feedforward_channels'],
                drop_rate=drop_rate,
                drop_path_rate=float(rates[i]),
                qkv_bias=qkv_bias,
                window_size=0 if i in self.global_attn_indexes else
                window_size,
                input_size=self.patch_resolution,
                use_rel_pos=use_rel_pos,
                norm_cfg=norm_cfg)
            layer_cfg.update(layer_cfgs[i])
            self.layers.append(ViTDetEncoderLayer(**layer_cfg))
        self.frozen_stages = frozen_stages
        if frozen_stages > 0:
            self._freeze_stages()

        self._init_accounting(checkpoint_source, allowed_missing,
                              allowed_unexpected)

    def _grid_pos_embed(self, pos_embed: Tensor) -> Tensor:
        """Turn an MAE position embedding into this model's grid layout.

        Args:
            pos_embed (Tensor): (1, 1 + N, C) with a CLS slot, (1, N, C)
                without, or already (1, h, w, C).

        Returns:
            Tensor: (1, H, W, C) on the ``img_size`` patch grid.
        """
        if pos_embed.dim() == 4:
            src_hw = tuple(pos_embed.shape[1:3])
            pos_embed = pos_embed.flatten(1, 2)
        else:
            num_tokens = pos_embed.shape[1]
            side = int(round((num_tokens - 1)**0.5))
            if side * side == num_tokens - 1:
                pos_embed = pos_embed[:, 1:]  # ViTDet drops the CLS slot
            else:
                side = int(round(num_tokens**0.5))
                if side * side != num_tokens:
                    raise ValueError(
                        f'pos_embed with {num_tokens} tokens is not a square '
                        'patch grid (with or without a CLS slot).')
            src_hw = (side, side)
        dst_hw = tuple(self.patch_resolution)
        if src_hw != dst_hw:
            pos_embed = resize_pos_embed(
                pos_embed,
                src_hw,
                dst_hw,
                mode=self.interpolate_mode,
                num_extra_tokens=0)
        return pos_embed.reshape(1, *dst_hw, pos_embed.shape[-1])

    def adapt_pretrained(self,
                         state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Put the pretrained position embedding on this backbone's grid.

        See :meth:`AccountedPretrainedMixin.adapt_pretrained`.
        """
        if 'pos_embed' in state_dict:
            with torch.no_grad():
                state_dict['pos_embed'] = self._grid_pos_embed(
                    state_dict['pos_embed'])
        return state_dict
