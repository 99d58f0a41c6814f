# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MAE pretraining with masks from Evolved Hierarchical Masking."""
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmpretrain.models import MAE
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..backbones import EHMMAEViT
from .ema_teacher import (  # noqa: F401  (EMATeacher, mask_seed re-exported)
    TEACHER_TYPES,
    EMATeacher,
    EMATeacherMixin,
    mask_seed,
)
from .teacher_masks import (
    TeacherMasksMixin,
    check_affinity_source,
    check_masking_cfg,
)

FEATURE_POOLS = ('avg', 'cls')


@MODELS.register_module()
class EHMMAE(TeacherMasksMixin, MAE):
    """MAE whose masks evolve from patches to parts over training.

    One training step (:meth:`loss`): the masks of
    :meth:`~ehm_mm.models.selfsup.teacher_masks.TeacherMasksMixin.training_masks`
    (update the EMA teacher; read the progress ``t = iter / max_iters``
    from mmengine's :class:`~mmengine.logging.MessageHub`; draw each
    image's depth on the host; unless every depth is 0, the patch affinity
    from the teacher's attention (:func:`~ehm_mm.attention_affinity`); the
    masks of ``masking``, e.g. ``EvolvedHierarchicalMasking``), then the
    visible patches encoded by the student, decoded, and MAE's pixel loss,
    exactly as :class:`~mmpretrain.models.MAE`.

    Nothing in the step reads a device value back to the host: shapes are
    static, the configuration is checked when the model is built, and the
    teacher's step count lives on the host. The returned dict holds
    ``loss``, ``mask_depth`` (the batch's mean masking depth),
    ``nonfinite_affinity`` (the number of images whose affinity held NaN or
    inf and got MAE random masks instead; 0 normally) and, with
    ``teacher='ema'``, on the iterations the logger writes,
    ``teacher_distance`` (``||teacher - student|| / ||student||`` after the
    update, :meth:`EMATeacherMixin.teacher_log_vars`), all but ``loss``
    logged, not part of the loss.

    The random draws of every iteration come from seeds hashed from
    ``(torch.initial_seed(), rank, iter)`` (:func:`mask_seed`), not from the
    global stream, so a resumed run draws the same masks as an
    uninterrupted one (the runner seeds torch with ``randomness.seed``) and
    no two ranks or iterations share a stream.

    The teacher is updated at the start of every :meth:`loss` call with the
    student as the last optimizer step left it, i.e. once per iteration
    (with gradient accumulation, once per accumulated batch; see
    :class:`~ehm_mm.models.selfsup.ema_teacher.EMATeacherMixin` for what
    ``ema_half_life`` means then). Its first update copies the student.

    The state dict holds ``backbone.*`` (exactly ``MAEViT``'s keys),
    ``neck.*``, ``head.*`` and, with ``teacher='ema'``, the teacher as
    ``teacher.module.*`` (``MAEViT`` keys) plus ``teacher.steps``. The
    teacher has no gradients, so the optimizer never changes it (no weight
    decay either) and DDP ignores it.

    With ``affinity_source='pixels'`` steps 1 and 3 change: there is no
    teacher (none is built or updated, whatever ``teacher`` says), and the
    affinity is computed from the inputs' own pixel cues, mean colour and
    gradient texture per encoder patch
    (:meth:`TeacherMasksMixin.pixel_affinity`);
    the tree builder, depth schedule and node masking are the same, and so
    is :meth:`predict`, whose hierarchies are then the pixel trees. This
    is the masking study's "pixel tree" control, this project's design.

    Args:
        backbone (dict): Config of the encoder; must build an
            :class:`~ehm_mm.models.EHMMAEViT`. Its ``mask_ratio`` only
            serves its own random masking, which EHM-MAE does not use.
        neck (dict): Config of the decoder (``MAEPretrainDecoder``).
        head (dict): Config of the loss head (``MAEPretrainHead``).
        masking (dict): Config of the mask generator
            (``EvolvedHierarchicalMasking``), the one owner of the mask
            ratio (default 0.75). Its ``grid_size`` is the encoder's patch
            grid, filled in here.
        teacher (str): Where the affinity comes from: ``'ema'``, an EMA copy
            of the encoder (:class:`EMATeacher`, mmengine's
            ``ExponentialMovingAverage``), or ``'online'``, the student
            itself without gradients. Defaults to ``'ema'``.
        ema_momentum (float, optional): EMA momentum in mmengine's
            convention, ``teacher = (1 - m) * teacher + m * student`` every
            iteration (a half-life of ``ln 2 / -ln(1 - m)`` iterations).
            None to use ``ema_half_life``. Defaults to 4e-5.
        ema_half_life (float, optional): The teacher's half-life as a
            fraction of the run's iterations, in ``(0, 1]``, resolved to a
            momentum from ``max_iters`` at the first training step; needs
            ``ema_momentum=None``. Defaults to None.
        attn_layers (Sequence[int], optional): Encoder layers whose
            attention builds the affinity (negative values count from the
            end); the teacher only runs up to the deepest one, so this is
            EHM's cost knob (see ``docs/en/core_performance.md``).
            Defaults to None, which means all layers.
        feature_pool (str): Feature written by ``'predict'`` mode for
            evaluation: ``'avg'`` (mean of the patch tokens) or ``'cls'``
            (the CLS token). Defaults to ``'avg'``.
        predict_patch_features (bool): ``'predict'`` mode also writes each
            image's patch tokens as ``patch_features`` ``[h, w, C]`` (for
            ``PatchSegProbe``; memory grows with the evaluated set).
            Defaults to False.
        affinity_source (str): Where the masks' affinity comes from:
            ``'teacher'`` (the teacher's attention) or ``'pixels'`` (the
            inputs' mean colour and gradient texture per patch, de-normalised
            with the data preprocessor's ``mean`` / ``std``; no teacher is
            built, ``teacher``, ``ema_momentum`` and ``ema_half_life`` are
            checked but unused, ``attn_layers`` is unused). Defaults to
            ``'teacher'``.
        **kwargs: The other arguments of mmpretrain's
            ``BaseSelfSupervisor``: ``target_generator`` (unused),
            ``pretrained``, ``data_preprocessor`` (None means
            ``SelfSupDataPreprocessor``) and ``init_cfg``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 masking: dict,
                 teacher: str = 'ema',
                 ema_momentum: Optional[float] = 4e-5,
                 ema_half_life: Optional[float] = None,
                 attn_layers: Optional[Sequence[int]] = None,
                 feature_pool: str = 'avg',
                 predict_patch_features: bool = False,
                 affinity_source: str = 'teacher',
                 **kwargs: Any) -> None:
        check_affinity_source(affinity_source)
        if feature_pool not in FEATURE_POOLS:
            raise ValueError(f'model.feature_pool must be one of '
                             f'{FEATURE_POOLS}, got {feature_pool!r}')
        check_masking_cfg(masking)
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        if not isinstance(self.backbone, EHMMAEViT):
            raise TypeError(
                'model.backbone must build an EHMMAEViT (a MAEViT that takes '
                f'its mask from outside), got {type(self.backbone).__name__}')
        self._check_decoder()
        self.build_masking(masking, self.grid_size, "encoder's patch grid")
        self.attn_layers = self._check_attn_layers(attn_layers)
        self.feature_pool = feature_pool
        self.predict_patch_features = bool(predict_patch_features)
        self.init_affinity_source(affinity_source, teacher, ema_momentum,
                                  ema_half_life)

    @property
    def grid_size(self) -> tuple:
        """tuple[int, int]: The encoder's patch grid ``(h, w)``."""
        h, w = self.backbone.patch_resolution
        return int(h), int(w)

    def _check_decoder(self) -> None:
        """Check that the decoder and head fit the encoder's patches."""
        num_patches = self.backbone.num_patches
        neck_patches = getattr(self.neck, 'num_patches', num_patches)
        if neck_patches != num_patches:
            raise ValueError(
                f'model.neck.num_patches ({neck_patches}) must equal the '
                f'encoder patch count ({num_patches} = '
                f'{self.grid_size[0]} x {self.grid_size[1]})')
        patch_size = self.backbone.patch_embed.projection.kernel_size[0]
        head_patch = getattr(self.head, 'patch_size', patch_size)
        if head_patch != patch_size:
            raise ValueError(
                f'model.head.patch_size ({head_patch}) must equal '
                f'model.backbone.patch_size ({patch_size})')

    def _check_attn_layers(
            self, attn_layers: Optional[Sequence[int]]) -> Optional[List[int]]:
        """Validate ``attn_layers`` against the encoder depth."""
        if attn_layers is None:
            return None
        if isinstance(attn_layers, int) or not isinstance(
                attn_layers, Sequence) or len(attn_layers) == 0:
            raise ValueError('model.attn_layers must be None or a non-empty '
                             f'list of layer indices, got {attn_layers!r}')
        num_layers = len(self.backbone.layers)
        for layer in attn_layers:
            if (isinstance(layer, bool) or not isinstance(layer, int)
                    or not -num_layers <= layer < num_layers):
                raise ValueError(
                    f'model.attn_layers entry {layer!r} is not a layer of '
                    f'the {num_layers}-layer encoder')
        return list(attn_layers)

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """One EHM-MAE training step (no device-to-host read).

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample]): Unused; kept for the
                interface.
            **kwargs: Unused.

        Returns:
            Dict[str, torch.Tensor]: ``loss``, ``mask_depth`` (the mean
            depth of the batch's masks), ``nonfinite_affinity``, for masks
            cut from trees ``mask_node_size`` (the mean size in patches of
            the masked nodes) and, with an EMA teacher on the logger's
            iterations, ``teacher_distance``.
        """
        masks = self.training_masks(inputs)
        latent, mask, ids_restore = self.backbone(
            inputs, mask=masks.mask, ids_restore=masks.ids_restore,
            ids_keep=masks.ids_keep)
        pred = self.neck(latent, ids_restore)
        loss = self.head.loss(pred, inputs, mask)
        return dict(loss=loss, **self.masking_log_vars(masks))

    def extract_pooled_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """One feature vector per image from the student encoder.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            torch.Tensor: ``[B, C]``, pooled as ``feature_pool`` says.
        """
        return self._pool(self.backbone(inputs, mask=None)[-1])

    def _pool(self, out: torch.Tensor) -> torch.Tensor:
        """The encoder's last output ``out`` pooled to ``[B, C]``."""
        if out.dim() == 4:  # featmap [B, C, h, w]
            return out.mean(dim=(2, 3))
        if out.dim() == 2:  # already pooled ([B, C])
            return out
        if self.feature_pool == 'cls':
            return out[:, 0]
        start = 1 if self.backbone.with_cls_token else 0
        return out[:, start:].mean(dim=1)

    def predict_features(self,
                         inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Evaluation features from one encoder pass (see ``predict``).

        ``feature`` (``[B, C]``, pooled as ``feature_pool`` says) and, with
        ``predict_patch_features=True``, ``patch_features`` (``[B, h, w,
        C]``, the patch tokens on the patch grid) for ``PatchSegProbe``.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Dict[str, torch.Tensor]: Data-sample field -> batched values.
        """
        out = self.backbone(inputs, mask=None)[-1]
        fields = dict(feature=self._pool(out))
        if self.predict_patch_features:
            if out.dim() == 4:  # featmap [B, C, h, w]
                patches = out.permute(0, 2, 3, 1)
            else:
                h, w = self.grid_size
                start = 1 if self.backbone.with_cls_token else 0
                patches = out[:, start:].reshape(inputs.shape[0], h, w, -1)
            fields['patch_features'] = patches
        return fields
