# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MAE pretraining with masks from Evolved Hierarchical Masking."""
import contextlib
import copy
import logging
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
from mmengine.dist import get_rank
from mmengine.logging import MessageHub, print_log
from mmengine.model import ExponentialMovingAverage
from mmpretrain.models import MAE
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

from ..backbones import EHMMAEViT
from ..masking import attention_affinity, build_hierarchy

TEACHER_TYPES = ('ema', 'online')
FEATURE_POOLS = ('avg', 'cls')


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for a block, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@MODELS.register_module()
class EHMMAE(MAE):
    """MAE whose masks evolve from patches to parts over training.

    One training step (:meth:`loss`):

    1. read the training progress ``t = iter / max_iters`` from mmengine's
       :class:`~mmengine.logging.MessageHub` (so epoch- and iteration-based
       loops and resumed runs see the right value);
    2. update the EMA teacher with the current student encoder;
    3. without gradients, compute the patch affinity from the teacher's
       attention (:func:`~ehm_mm.attention_affinity`), build the hierarchy
       and draw masks at depth ``d(t)`` (``EvolvedHierarchicalMasking``);
    4. encode the visible patches with the student, decode and take MAE's
       pixel loss, exactly as :class:`~mmpretrain.models.MAE`.

    The returned dict holds ``loss`` and ``mask_depth`` (the batch's mean
    masking depth, logged, not part of the loss).

    The masks draw their random numbers from a generator seeded with
    ``(torch.initial_seed(), rank, iter)`` for every iteration, not from the
    global stream, so a resumed run draws the same masks as an uninterrupted
    one (the runner seeds torch with ``randomness.seed``).

    The teacher is updated at the start of every :meth:`loss` call with the
    student as the last optimizer step left it, i.e. once per iteration
    (with gradient accumulation, once per accumulated batch). Its first
    update copies the student.

    The state dict holds ``backbone.*`` (exactly ``MAEViT``'s keys),
    ``neck.*``, ``head.*`` and, with ``teacher='ema'``, the teacher as
    ``teacher.module.*`` (``MAEViT`` keys) plus ``teacher.steps``. The
    teacher has no gradients, so the optimizer never changes it (no weight
    decay either) and DDP ignores it.

    Args:
        backbone (dict): Config of the encoder; must build an
            :class:`~ehm_mm.models.EHMMAEViT`.
        neck (dict): Config of the decoder (``MAEPretrainDecoder``).
        head (dict): Config of the loss head (``MAEPretrainHead``).
        masking (dict): Config of the mask generator
            (``EvolvedHierarchicalMasking``). ``mask_ratio`` may be left
            out to take ``backbone.mask_ratio``; when both are given they
            must agree.
        teacher (str): Where the affinity comes from: ``'ema'``, an EMA copy
            of the encoder (mmengine's ``ExponentialMovingAverage``), or
            ``'online'``, the student itself without gradients.
            Defaults to ``'ema'``.
        ema_momentum (float): EMA momentum in mmengine's convention,
            ``teacher = (1 - m) * teacher + m * student`` every iteration.
            Defaults to 4e-5.
        attn_layers (Sequence[int], optional): Encoder layers whose
            attention builds the affinity (negative values count from the
            end); the teacher only runs up to the deepest one, so this is
            EHM's cost knob: for ViT-B/16 the EHM/MAE training-step time
            is about 1.13 with the first 4 layers and 1.5 with all 12
            (CPU, float32; ``tools/benchmarks/bench_train_step.py``).
            Defaults to None, which means all layers.
        feature_pool (str): Feature written by ``'predict'`` mode for
            evaluation: ``'avg'`` (mean of the patch tokens) or ``'cls'``
            (the CLS token). Defaults to ``'avg'``.
        target_generator (dict, optional): Unused by MAE; kept for the
            ``BaseSelfSupervisor`` interface. Defaults to None.
        pretrained (str, optional): Checkpoint to load at init.
            Defaults to None.
        data_preprocessor (dict, optional): Defaults to None, which means
            ``SelfSupDataPreprocessor``.
        init_cfg (dict | list[dict], optional): Initialization config.
            Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 masking: dict,
                 teacher: str = 'ema',
                 ema_momentum: float = 4e-5,
                 attn_layers: Optional[Sequence[int]] = None,
                 feature_pool: str = 'avg',
                 target_generator: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[Union[List[dict], dict]] = None) -> None:
        if teacher not in TEACHER_TYPES:
            raise ValueError(f'model.teacher must be one of {TEACHER_TYPES}, '
                             f'got {teacher!r}')
        if isinstance(ema_momentum, bool) or not 0 < ema_momentum < 1:
            raise ValueError('model.ema_momentum must be in (0, 1), got '
                             f'{ema_momentum!r}')
        if feature_pool not in FEATURE_POOLS:
            raise ValueError(f'model.feature_pool must be one of '
                             f'{FEATURE_POOLS}, got {feature_pool!r}')
        if not isinstance(masking, dict):
            raise TypeError('model.masking must be a config dict, got '
                            f'{type(masking).__name__}')
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            target_generator=target_generator,
            pretrained=pretrained,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if not isinstance(self.backbone, EHMMAEViT):
            raise TypeError(
                'model.backbone must build an EHMMAEViT (a MAEViT that takes '
                f'its mask from outside), got {type(self.backbone).__name__}')
        self._check_decoder()
        masking = copy.deepcopy(dict(masking))
        ratio = masking.setdefault('mask_ratio', self.backbone.mask_ratio)
        if (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                or not 0 < ratio < 1):
            raise ValueError('model.masking.mask_ratio must be in (0, 1), '
                             f'got {ratio!r}')
        if ratio != self.backbone.mask_ratio:
            raise ValueError(
                f'model.masking.mask_ratio ({ratio}) differs from '
                f'model.backbone.mask_ratio ({self.backbone.mask_ratio})')
        self.masking = MODELS.build(masking)
        try:
            self.masking.check_num_levels(self.grid_size)
        except ValueError as e:
            raise ValueError(f'model.masking: {e}') from e
        self.attn_layers = self._check_attn_layers(attn_layers)
        self.teacher_type = teacher
        self.ema_momentum = ema_momentum
        self.feature_pool = feature_pool
        if teacher == 'ema':
            self.teacher = ExponentialMovingAverage(
                self.backbone, momentum=ema_momentum)
            self.teacher.eval()
        else:
            self.teacher = None
        self._warned_no_progress = False

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

    def train(self, mode: bool = True) -> 'EHMMAE':
        """Set train/eval mode; the EMA teacher always stays in eval mode.

        Args:
            mode (bool): Training mode. Defaults to True.

        Returns:
            EHMMAE: self.
        """
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def init_weights(self) -> None:
        """Initialize the weights, then start the teacher as a copy."""
        super().init_weights()
        if self.teacher is not None:
            self.teacher.module.load_state_dict(self.backbone.state_dict())

    def current_progress(self) -> float:
        """Training progress ``iter / max_iters`` from the message hub.

        Returns:
            float: Progress in ``[0, 1]``; 0 (with a one-time warning) when
            the hub holds no training loop information, e.g. outside a
            runner.
        """
        hub = MessageHub.get_current_instance()
        cur_iter = hub.get_info('iter')
        max_iters = hub.get_info('max_iters')
        if cur_iter is None or not max_iters:
            if not self._warned_no_progress:
                print_log(
                    'EHMMAE: no `iter` / `max_iters` in the MessageHub '
                    '(not run by a Runner?); using progress 0.',
                    logger='current',
                    level=logging.WARNING)
                self._warned_no_progress = True
            return 0.0
        return min(max(cur_iter / max_iters, 0.0), 1.0)

    def _mask_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded from the base seed, the rank and the iter."""
        cur_iter = MessageHub.get_current_instance().get_info('iter') or 0
        seed = (torch.initial_seed() * 1_000_003 + get_rank() * 7_919 +
                int(cur_iter)) % (2**63)
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
        return generator

    @torch.no_grad()
    def teacher_affinity(self, inputs: torch.Tensor) -> torch.Tensor:
        """Patch affinity ``[B, N, N]`` from the teacher's attention.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            torch.Tensor: float32 ``[B, N, N]``.
        """
        if self.teacher is not None:
            return attention_affinity(
                self.teacher.module, inputs, layers=self.attn_layers)
        with _eval_mode(self.backbone):
            return attention_affinity(
                self.backbone, inputs, layers=self.attn_layers)

    @torch.no_grad()
    def generate_masks(self,
                       inputs: torch.Tensor,
                       progress: float,
                       generator: Optional[torch.Generator] = None):
        """Teacher affinity -> hierarchy -> masks at depth ``d(progress)``.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            progress (float): Training progress in ``[0, 1]``.
            generator (torch.Generator, optional): Random source of the
                masks. Defaults to None, which means the global one.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` and ``hierarchy``.
        """
        affinity = self.teacher_affinity(inputs)
        return self.masking(
            affinity,
            grid_size=self.grid_size,
            progress=progress,
            generator=generator)

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """One EHM-MAE training step.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample]): Unused; kept for the
                interface.
            **kwargs: Unused.

        Returns:
            Dict[str, torch.Tensor]: ``loss`` and ``mask_depth`` (the mean
            depth of the batch's masks; not summed into the loss).
        """
        if self.teacher is not None:
            self.teacher.update_parameters(self.backbone)
        progress = self.current_progress()
        masks = self.generate_masks(
            inputs, progress, generator=self._mask_generator(inputs.device))
        latent, mask, ids_restore = self.backbone(
            inputs, mask=masks.mask, ids_restore=masks.ids_restore)
        pred = self.neck(latent, ids_restore)
        loss = self.head.loss(pred, inputs, mask)
        return dict(loss=loss, mask_depth=masks.depth.float().mean())

    def extract_pooled_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """One feature vector per image from the student encoder.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            torch.Tensor: ``[B, C]``, pooled as ``feature_pool`` says.
        """
        out = self.backbone(inputs, mask=None)[-1]
        if out.dim() == 4:  # featmap [B, C, h, w]
            return out.mean(dim=(2, 3))
        if out.dim() == 2:  # already pooled ([B, C])
            return out
        if self.feature_pool == 'cls':
            return out[:, 0]
        start = 1 if self.backbone.with_cls_token else 0
        return out[:, start:].mean(dim=1)

    @torch.no_grad()
    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Features and hierarchies for evaluation.

        Writes into each data sample ``feature`` (``[C]``, see
        ``feature_pool``) and ``hierarchy_ancestors`` (``[L, h, w]``, the
        teacher hierarchy's ancestor ids per level), which ``KNNAccuracy``
        and ``HierarchyIoU`` read.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample], optional): Annotations; new
                samples are made when None. Defaults to None.
            **kwargs: Unused.

        Returns:
            List[DataSample]: The data samples with the two fields added.
        """
        features = self.extract_pooled_feat(inputs)
        hierarchy = build_hierarchy(
            self.teacher_affinity(inputs), self.grid_size,
            **self.masking.hierarchy_cfg)
        h, w = self.grid_size
        ancestors = hierarchy.ancestors.reshape(inputs.shape[0], -1, h, w)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        for sample, feat, anc in zip(data_samples, features, ancestors):
            sample.set_field(feat, 'feature')
            sample.set_field(anc, 'hierarchy_ancestors')
        return data_samples

    def forward(self,
                inputs: Union[torch.Tensor, List[torch.Tensor]],
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        """Dispatch to ``extract_feat``, ``loss`` or ``predict``.

        Args:
            inputs (torch.Tensor | List[torch.Tensor]): The images.
            data_samples (List[DataSample], optional): Annotations.
                Defaults to None.
            mode (str): ``'tensor'``, ``'loss'`` or ``'predict'``.
                Defaults to ``'tensor'``.

        Returns:
            The features, the loss dict or the predicted data samples.
        """
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode=mode)
