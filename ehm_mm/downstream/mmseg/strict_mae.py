# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""mmseg's MAE backbone that accounts for every key of its pretrained load.

mmseg's ``MAE.init_weights`` loads with ``load_state_dict(strict=False)``
and never looks at the result: a checkpoint with a ``backbone.`` prefix (an
EHM or mmpretrain checkpoint) or in timm layout loads *nothing*, silently,
and the segmentation model trains from scratch.
"""
from typing import Dict, Optional, Sequence

from mmseg.models.backbones import MAE
from mmseg.registry import MODELS
from torch import Tensor

from ..accounted_pretrained import AccountedPretrainedMixin


@MODELS.register_module()
class StrictMAE(AccountedPretrainedMixin, MAE):
    """mmseg ``MAE`` with a pretrained load that fails on unknown keys.

    Architecture and forward are mmseg's ``MAE`` (BEiT-style layers with a
    full qkv bias, layer scale ``gamma_1/gamma_2`` and a zero-initialised
    relative position bias). Only ``init_weights`` differs when
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``:

    1. the checkpoint may be an EHM checkpoint (the student encoder under
       ``backbone.*`` or, with ``checkpoint_source='teacher'``, the EMA
       teacher), an encoder-only checkpoint (``ehm2mmseg.py`` output) or an
       official-MAE / timm checkpoint; see
       :func:`ehm_mm.downstream.extract_encoder`;
    2. the absolute position embedding is resized to ``img_size`` (mmseg's
       own ``resize_abs_pos_embed``);
    3. every model key must be loaded or match ``allowed_missing``, every
       checkpoint key must be used or match ``allowed_unexpected``, shapes
       must agree; otherwise :class:`ValueError` and nothing is loaded;
    4. the counts are logged and kept in :attr:`pretrained_report`.

    The class name keeps ``MAE`` in it on purpose: mmseg's
    ``LayerDecayOptimizerConstructor`` picks its ViT layer-id rule by that
    substring of the backbone's class name.

    Args:
        checkpoint_source (str): Encoder to take from an EHM checkpoint,
            ``'student'`` or ``'teacher'``. Defaults to ``'student'``.
        allowed_missing (Sequence[str], optional): Regular expressions for
            model weights the checkpoint may lack. Defaults to None, i.e.
            :attr:`NEW_WEIGHTS`.
        allowed_unexpected (Sequence[str], optional): Regular expressions
            for checkpoint weights the model may ignore. Defaults to None,
            i.e. the final norm ``ln1.*`` when ``final_norm=False`` and
            nothing otherwise.
        **kwargs: Arguments of mmseg's ``MAE`` (``img_size``,
            ``embed_dims``, ``num_layers``, ``out_indices``, ``init_values``,
            ``init_cfg``, ...).
    """

    #: Weights mmseg's MAE adds on top of a plain ViT encoder. Each starts
    #: so that the layer computes the pretrained function (layer scale at
    #: ``init_values``, 1.0 in the shipped config; zero relative position
    #: bias); the index is a constant buffer.
    NEW_WEIGHTS = (
        r'layers\.\d+\.gamma_[12]',
        r'layers\.\d+\.attn\.relative_position_bias_table',
        r'layers\.\d+\.attn\.relative_position_index',
    )
    #: The pretrained final norm, unused without ``final_norm=True`` (MAE
    #: segmentation reads intermediate layers through ``Feature2Pyramid``).
    FINAL_NORM = (r'ln1\.(weight|bias)', )

    def __init__(self,
                 checkpoint_source: str = 'student',
                 allowed_missing: Optional[Sequence[str]] = None,
                 allowed_unexpected: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if allowed_unexpected is None and not self.final_norm:
            allowed_unexpected = self.FINAL_NORM
        self._init_accounting(checkpoint_source, allowed_missing,
                              allowed_unexpected)

    def adapt_pretrained(self,
                         state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Resize the patch positions with mmseg's own bicubic resize.

        The CLS slot is kept; see
        :meth:`AccountedPretrainedMixin.adapt_pretrained`.
        """
        return self.resize_abs_pos_embed(state_dict)
