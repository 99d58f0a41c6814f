# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""SimMIM pretraining with masks from Evolved Hierarchical Masking."""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmpretrain.models import SimMIM, SwinTransformer, VisionTransformer
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..masking import MaskingResult
from .ema_teacher import eval_mode
from .teacher_masks import (
    TeacherMasksMixin,
    check_affinity_source,
    check_masking_cfg,
)

AFFINITY_TYPES = ('attention', 'features')


def pool_affinity(affinity: Tensor, token_grid: Tuple[int, int],
                  scale: int) -> Tensor:
    """Average a token affinity over ``scale x scale`` token blocks.

    Args:
        affinity (Tensor): ``[B, L, L]`` over the token grid (row-major).
        token_grid (Tuple[int, int]): ``(th, tw)``, ``th * tw == L``.
        scale (int): Tokens per mask patch side.

    Returns:
        Tensor: ``[B, N, N]`` over the mask grid ``(th / s, tw / s)``.
    """
    if scale == 1:
        return affinity
    batch = affinity.shape[0]
    gh, gw = token_grid[0] // scale, token_grid[1] // scale
    blocks = affinity.view(batch, gh, scale, gw, scale, gh, scale, gw, scale)
    return blocks.mean(dim=(2, 4, 6, 8)).reshape(batch, gh * gw, gh * gw)


def feature_affinity(featmaps: Sequence[Tensor],
                     mask_grid: Tuple[int, int]) -> Tensor:
    """Cosine similarity of feature maps pooled to the mask grid.

    Every map is average-pooled to the mask grid; the cosine similarities
    of the pooled vectors are summed over the maps.

    Args:
        featmaps (Sequence[Tensor]): ``[B, C_i, H_i, W_i]`` each.
        mask_grid (Tuple[int, int]): ``(gh, gw)``.

    Returns:
        Tensor: float32 ``[B, N, N]``, ``N = gh * gw``.
    """
    total = None
    for featmap in featmaps:
        pooled = F.adaptive_avg_pool2d(featmap.float(), mask_grid)
        vectors = F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)
        sim = vectors @ vectors.transpose(1, 2)  # [B, N, N]
        total = sim if total is None else total + sim
    return total


@MODELS.register_module()
class EHMSimMIM(TeacherMasksMixin, SimMIM):
    """SimMIM whose masks evolve from patches to parts over training.

    One training step (:meth:`loss`), as in ``EHMMAE``: update the EMA
    teacher, read the progress ``t = iter / max_iters`` and draw each
    image's depth on the host, make the teacher's patch affinity on
    SimMIM's *mask grid* (skipped when every depth is 0), build the trees
    as deep as needed and mask whole nodes (``EvolvedHierarchicalMasking``),
    expand every mask patch to its ``scale x scale`` tokens and run
    SimMIM's student, decoder (on the encoder's deepest output) and loss.
    Nothing in the step reads the device. Masks in ``data_samples`` are
    ignored, so the pipeline needs no mask generator. The teacher,
    progress, per-iteration seeds and mask generation are ``EHMMAE``'s
    (:class:`~ehm_mm.models.selfsup.teacher_masks.TeacherMasksMixin`).

    Backbones and where the affinity comes from:

    * ViT (an mmpretrain ``VisionTransformer`` that takes a token mask,
      e.g. ``MaskFeatViT``): the mask grid is the patch grid
      (``mask_patch_size`` = patch size; a multiple averages the token
      affinity over blocks). ``affinity='attention'`` (default): the
      teacher's self-attention (``attention_affinity``); ``'features'``:
      the cosine similarity of its output tokens.
    * Swin (``SimMIMSwinTransformer``): 32 px mask patches, a 6 x 6 grid at
      192 px (7 x 7 at 224), each leaf 8 x 8 Swin tokens. Window attention
      has no attention map over the whole image, so the affinity is
      ``'features'``: the teacher's stage outputs (``out_indices``; the
      last stage has stride 32, one vector per mask patch) pooled to the
      mask grid, cosine similarity, summed over the stages.
      ``'attention'`` raises.

    With ``affinity_source='pixels'`` (as in ``EHMMAE``) there is no
    teacher (none is built or updated, whatever ``teacher`` says) and the
    affinity comes from the inputs' own pixel cues, mean colour and
    gradient texture per *mask patch* (e.g. 32 px on Swin's 6 x 6 grid),
    de-normalised with the data preprocessor's ``mean`` / ``std``
    (:meth:`TeacherMasksMixin.pixel_affinity`): the in-model, on-device
    counterpart of the pipeline's ``EvolvedHierarchicalMaskGenerator``.
    The tree builder, depth schedule, node masking and :meth:`predict`
    are the same; ``affinity`` and ``attn_layers`` are checked but unused.

    :meth:`predict` (``mode='predict'``) writes each image's pooled
    feature and the ancestors of its tree on the mask grid, which
    ``HierarchyIoU`` reads.

    The state dict holds ``backbone.*``, ``neck.*``, ``head.*`` and, with
    ``teacher='ema'`` (and ``affinity_source='teacher'``),
    ``teacher.module.*`` (the backbone's keys) and ``teacher.steps``.

    Args:
        backbone (dict): Config of the encoder; ``SimMIMSwinTransformer``
            or a mask-taking ViT such as ``MaskFeatViT``.
        neck (dict): Config of the decoder (``SimMIMLinearDecoder`` with
            ``encoder_stride`` = the encoder's output stride).
        head (dict): Config of the loss head (``SimMIMHead`` with
            ``patch_size`` = the encoder's token size).
        masking (dict): Config of ``EvolvedHierarchicalMasking``
            (``mask_ratio``, ``d_min``, ``d_max``, ...); its ``grid_size``
            is the mask grid, filled in here.
        mask_patch_size (int): Side of a mask patch in pixels, a multiple
            of the token size. Defaults to 32.
        affinity (str, optional): ``'attention'`` (ViT only) or
            ``'features'``; None picks ``'attention'`` for a ViT and
            ``'features'`` for Swin. Defaults to None.
        attn_layers (Sequence[int], optional): ViT layers whose attention
            is used (``'attention'`` only); None means all.
            Defaults to None.
        teacher (str): ``'ema'`` or ``'online'``. Defaults to ``'ema'``.
        ema_momentum (float, optional): EMA momentum, ``teacher = (1 - m)
            * teacher + m * student`` per iteration; None to use
            ``ema_half_life``. Defaults to 4e-5.
        ema_half_life (float, optional): The teacher's half-life as a
            fraction of the run's iterations, in ``(0, 1]``; needs
            ``ema_momentum=None`` (see ``EMATeacherMixin``).
            Defaults to None.
        affinity_source (str): Where the masks' affinity comes from:
            ``'teacher'`` (the teacher encoder, as ``affinity`` says) or
            ``'pixels'`` (the inputs' mean colour and gradient texture per
            mask patch; no teacher is built, ``teacher``, ``ema_momentum``,
            ``ema_half_life``, ``affinity`` and ``attn_layers`` are checked
            but unused). Defaults to ``'teacher'``.
        **kwargs: ``target_generator``, ``pretrained``,
            ``data_preprocessor`` and ``init_cfg``, as in ``EHMMAE``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 masking: dict,
                 mask_patch_size: int = 32,
                 affinity: Optional[str] = None,
                 attn_layers: Optional[Sequence[int]] = None,
                 teacher: str = 'ema',
                 ema_momentum: Optional[float] = 4e-5,
                 ema_half_life: Optional[float] = None,
                 affinity_source: str = 'teacher',
                 **kwargs: Any) -> None:
        check_affinity_source(affinity_source)
        check_masking_cfg(masking)
        super().__init__(backbone=backbone, neck=neck, head=head, **kwargs)
        self.backbone_kind, self.token_grid, token_size = self._inspect()
        if (isinstance(mask_patch_size, bool)
                or not isinstance(mask_patch_size, int)
                or mask_patch_size % token_size):
            raise ValueError(
                f'model.mask_patch_size must be a multiple of the encoder '
                f'token size {token_size}, got {mask_patch_size!r}')
        self.scale = mask_patch_size // token_size
        if any(side % self.scale for side in self.token_grid):
            raise ValueError(
                f'the {self.token_grid} token grid does not divide into '
                f'{mask_patch_size} px mask patches')
        self.mask_patch_size = mask_patch_size
        self.mask_grid = (self.token_grid[0] // self.scale,
                          self.token_grid[1] // self.scale)
        head_patch = getattr(self.head, 'patch_size', token_size)
        if head_patch != token_size:
            raise ValueError(f'model.head.patch_size ({head_patch}) must '
                             f'equal the encoder token size ({token_size})')
        if affinity is None:
            affinity = 'attention' if self.backbone_kind == 'vit' else \
                'features'
        if affinity not in AFFINITY_TYPES:
            raise ValueError(f'model.affinity must be one of '
                             f'{AFFINITY_TYPES}, got {affinity!r}')
        if affinity == 'attention' and self.backbone_kind != 'vit':
            raise ValueError(
                f"model.affinity='attention' needs global self-attention (a"
                f' ViT); {type(self.backbone).__name__} uses window '
                "attention, which has no image-wide attention map: use "
                "affinity='features'")
        if attn_layers is not None and affinity != 'attention':
            raise ValueError("model.attn_layers needs affinity='attention'")
        self.affinity = affinity
        self.attn_layers = attn_layers
        self.build_masking(masking, self.mask_grid, 'mask grid')
        self.init_affinity_source(affinity_source, teacher, ema_momentum,
                                  ema_half_life)

    def _inspect(self) -> Tuple[str, Tuple[int, int], int]:
        """The backbone's kind, token grid and token size in pixels."""
        backbone = self.backbone
        if not hasattr(backbone, 'mask_token'):
            raise TypeError(
                'model.backbone must take a token mask (have a mask_token), '
                'e.g. SimMIMSwinTransformer or MaskFeatViT; got '
                f'{type(backbone).__name__}')
        if isinstance(backbone, SwinTransformer):
            grid = tuple(int(s) for s in backbone.patch_embed.init_out_size)
            return 'swin', grid, backbone.patch_embed.projection.stride[0]
        if isinstance(backbone, VisionTransformer):
            grid = tuple(int(s) for s in backbone.patch_resolution)
            return 'vit', grid, backbone.patch_embed.projection.stride[0]
        raise TypeError(
            'model.backbone must be a Swin Transformer (window attention, '
            'features affinity) or a Vision Transformer (global attention); '
            f'{type(backbone).__name__} is neither')

    def _featmaps(self, outs: Union[Tensor, Sequence[Tensor]]
                  ) -> List[Tensor]:
        """Encoder outputs as feature maps ``[B, C, h, w]``."""
        if isinstance(outs, Tensor):
            outs = (outs, )
        maps = []
        for out in outs:
            if out.dim() == 3:  # ViT tokens [B, extra + L, C]
                num = self.token_grid[0] * self.token_grid[1]
                out = out[:, out.shape[1] - num:].transpose(1, 2)
                out = out.reshape(out.shape[0], -1, *self.token_grid)
            elif out.dim() != 4:
                raise ValueError(
                    'encoder outputs must be tokens [B, L, C] or feature '
                    f'maps [B, C, h, w], got {list(out.shape)}')
            maps.append(out)
        return maps

    @torch.no_grad()
    def encoder_affinity(self, inputs: Tensor) -> Tensor:
        """Patch affinity ``[B, N, N]`` on the mask grid from the teacher.

        ``affinity='attention'``: the teacher's attention averaged over each
        mask patch's tokens; ``'features'``: the cosine similarity of its
        outputs pooled to the mask grid. (With ``affinity_source='pixels'``
        :meth:`teacher_affinity` does not call this.)

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: float32 ``[B, N, N]``, ``N = gh * gw``.
        """
        if self.affinity == 'attention':
            return pool_affinity(super().encoder_affinity(inputs),
                                 self.token_grid, self.scale)
        encoder = self.teacher_encoder()
        with eval_mode(encoder):
            outs = encoder(inputs, mask=None)
        return feature_affinity(self._featmaps(outs), self.mask_grid)

    def token_mask(self, result: MaskingResult) -> Tensor:
        """The token mask of masks on the mask grid.

        Args:
            result (MaskingResult): Masks on :attr:`mask_grid`.

        Returns:
            Tensor: ``[B, th, tw]`` (1 = masked), every mask patch a
            ``scale x scale`` block of tokens.
        """
        mask = result.mask.view(-1, *self.mask_grid)  # [B, gh, gw]
        return mask.repeat_interleave(self.scale, 1).repeat_interleave(
            self.scale, 2)  # [B, th, tw]

    def loss(self, inputs: Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        """One EHM-SimMIM training step (no device-to-host read).

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample]): Unused (their masks, if any,
                are ignored).
            **kwargs: Unused.

        Returns:
            Dict[str, Tensor]: ``loss``, ``mask_depth`` (the batch's mean
            masking depth), ``nonfinite_affinity`` (images whose affinity
            held NaN or inf and got random masks; 0 normally), for masks cut
            from trees ``mask_node_size`` (the mean size in mask patches of
            the masked nodes) and, with an EMA teacher on the logger's
            iterations, ``teacher_distance`` (``||teacher - student|| /
            ||student||``), all but ``loss`` logged, not part of the loss.
        """
        result = self.training_masks(inputs)
        mask = self.token_mask(result)
        if self.backbone_kind == 'vit':
            latent = self.backbone(inputs, mask.flatten(1))
        else:
            latent = self.backbone(inputs, mask)
        img_rec = self.neck(self._featmaps(latent)[-1])  # deepest output
        loss = self.head.loss(img_rec, inputs, mask)
        return dict(loss=loss, **self.masking_log_vars(result))

    def extract_pooled_feat(self, inputs: Tensor) -> Tensor:
        """One feature vector per image from the student encoder.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: ``[B, C]``: the encoder's deepest output averaged over
            its tokens (or as the encoder pooled it).
        """
        out = self.backbone(inputs, mask=None)
        deepest = out if isinstance(out, Tensor) else out[-1]
        if deepest.dim() == 2:  # already pooled ([B, C])
            return deepest
        return self._featmaps(deepest)[0].mean(dim=(2, 3))

    def predict_features(self, inputs: Tensor) -> Dict[str, Tensor]:
        """Evaluation features (see ``predict``): ``feature`` ``[B, C]``.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Dict[str, Tensor]: ``feature``, :meth:`extract_pooled_feat`.
        """
        return dict(feature=self.extract_pooled_feat(inputs))
