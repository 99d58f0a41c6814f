# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MAE pretraining with masks from Evolved Hierarchical Masking."""
import contextlib
import copy
import hashlib
import logging
import random
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
from ..masking import MaskingResult, attention_affinity

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


def mask_seed(base_seed: int, rank: int, iteration: int,
              stream: str) -> int:
    """A 63-bit seed hashed from ``(base_seed, rank, iteration, stream)``.

    Distinct inputs give unrelated seeds: rank ``r`` at iteration ``i``
    never reuses another rank's or iteration's stream (a linear mix such as
    ``iteration + 7919 * rank`` does, e.g. rank 1 at iteration 0 and rank 0
    at iteration 7919).

    Args:
        base_seed (int): The run's seed (``torch.initial_seed()``).
        rank (int): The process rank.
        iteration (int): The training iteration.
        stream (str): Which draw the seed is for (``'depth'``,
            ``'noise'``).

    Returns:
        int: The seed, in ``[0, 2**63)``.
    """
    text = f'{int(base_seed)}/{int(rank)}/{int(iteration)}/{stream}'
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2**63 - 1)


class EMATeacher(ExponentialMovingAverage):
    """mmengine's EMA with its step counter on the host.

    ``ExponentialMovingAverage.update_parameters`` tests its ``steps``
    buffer (a tensor) on every call, a device sync. This subclass keeps a
    host copy of the count (restored from ``steps`` when a checkpoint is
    loaded) and updates all parameters with one ``torch._foreach_lerp_``,
    the same arithmetic as mmengine's per-tensor ``lerp_``. The state dict
    is mmengine's: ``module.*`` and ``steps``.

    Args:
        model (nn.Module): The model to average.
        momentum (float): ``teacher = (1 - m) * teacher + m * student``.
    """

    def __init__(self, model: nn.Module, momentum: float) -> None:
        super().__init__(model, momentum=momentum)
        self.num_updates = 0  # host copy of `steps`

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Copy (first call) or average the parameters of ``model``.

        Args:
            model (nn.Module): The student, with the same parameter names.
        """
        source = dict(model.named_parameters())
        names = list(self.avg_parameters)
        if self.num_updates == 0:
            torch._foreach_copy_(
                [self.avg_parameters[k].data for k in names],
                [source[k].data for k in names])
        elif self.num_updates % self.interval == 0:
            names = [k for k in names
                     if self.avg_parameters[k].dtype.is_floating_point]
            torch._foreach_lerp_(
                [self.avg_parameters[k].data for k in names],
                [source[k].data.to(self.avg_parameters[k].device)
                 for k in names], self.momentum)
        buffers = list(self.module.buffers())
        if buffers:
            torch._foreach_copy_(
                [b.data for b in buffers],
                [b.data.to(a.device) for a, b in zip(buffers,
                                                     model.buffers())])
        self.steps.add_(1)
        self.num_updates += 1

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + 'steps' in state_dict:  # one host read, at load time
            self.num_updates = int(state_dict[prefix + 'steps'])


@MODELS.register_module()
class EHMMAE(MAE):
    """MAE whose masks evolve from patches to parts over training.

    One training step (:meth:`loss`):

    1. update the EMA teacher with the current student encoder;
    2. read the training progress ``t = iter / max_iters`` from mmengine's
       :class:`~mmengine.logging.MessageHub` and draw each image's masking
       depth on the host (``EvolvedHierarchicalMasking.draw_depths``);
    3. unless every depth is 0 (MAE masks need no tree), compute the patch
       affinity from the teacher's attention
       (:func:`~ehm_mm.attention_affinity`) without gradients;
    4. build the trees only as deep as the drawn depths and mask whole
       nodes (``EvolvedHierarchicalMasking``);
    5. encode the visible patches with the student, decode and take MAE's
       pixel loss, exactly as :class:`~mmpretrain.models.MAE`.

    Nothing in the step reads a device value back to the host: shapes are
    static, the configuration is checked when the model is built, and the
    teacher's step count lives on the host. The returned dict holds
    ``loss``, ``mask_depth`` (the batch's mean masking depth) and
    ``nonfinite_affinity`` (the number of images whose affinity held NaN or
    inf and got MAE random masks instead; 0 normally), the last two logged,
    not part of the loss.

    The random draws of every iteration come from seeds hashed from
    ``(torch.initial_seed(), rank, iter)`` (:func:`mask_seed`), not from the
    global stream, so a resumed run draws the same masks as an
    uninterrupted one (the runner seeds torch with ``randomness.seed``) and
    no two ranks or iterations share a stream.

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
        ema_momentum (float): EMA momentum in mmengine's convention,
            ``teacher = (1 - m) * teacher + m * student`` every iteration.
            Defaults to 4e-5.
        attn_layers (Sequence[int], optional): Encoder layers whose
            attention builds the affinity (negative values count from the
            end); the teacher only runs up to the deepest one, so this is
            EHM's cost knob (see ``docs/en/core_performance.md``).
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
        if masking.setdefault('grid_size', self.grid_size) != self.grid_size:
            raise ValueError(
                f"model.masking.grid_size {masking['grid_size']} is not the "
                f'encoder\'s patch grid {self.grid_size}; leave it out')
        try:
            self.masking = MODELS.build(masking)
        except (TypeError, ValueError) as e:
            raise type(e)(f'model.masking: {e}') from e
        self.attn_layers = self._check_attn_layers(attn_layers)
        self.teacher_type = teacher
        self.ema_momentum = ema_momentum
        self.feature_pool = feature_pool
        if teacher == 'ema':
            self.teacher = EMATeacher(self.backbone, ema_momentum)
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

    def mask_seed(self, stream: str) -> int:
        """This iteration's seed of one random stream (:func:`mask_seed`).

        Args:
            stream (str): ``'depth'`` or ``'noise'``.

        Returns:
            int: The seed.
        """
        cur_iter = MessageHub.get_current_instance().get_info('iter') or 0
        return mask_seed(torch.initial_seed(), get_rank(), cur_iter, stream)

    def _mask_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded for this rank and iteration."""
        generator = torch.Generator(device=device)
        generator.manual_seed(self.mask_seed('noise'))
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
                       generator: Optional[torch.Generator] = None,
                       depth: Optional[List[int]] = None) -> MaskingResult:
        """Teacher affinity -> hierarchy -> masks at depth ``d(progress)``.

        Args:
            inputs (torch.Tensor): Normalised images ``[B, C, H, W]``.
            progress (float): Training progress in ``[0, 1]``.
            generator (torch.Generator, optional): Random source of the
                masks on the inputs' device. Defaults to None, which means
                the global one.
            depth (List[int], optional): Each image's depth, drawn on the
                host (``masking.draw_depths``); the teacher is skipped when
                all are 0. None draws them from ``generator`` on the device
                after the patch values. Defaults to None.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth``, ``hierarchy`` and ``nonfinite``.
        """
        if depth is None:
            return self.masking(
                self.teacher_affinity(inputs), progress=progress,
                generator=generator)
        affinity = self.teacher_affinity(inputs) if max(depth) > 0 else None
        return self.masking(affinity, depth=depth, generator=generator)

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
            depth of the batch's masks) and ``nonfinite_affinity``.
        """
        if self.teacher is not None:
            self.teacher.update_parameters(self.backbone)
        progress = self.current_progress()
        depth = self.masking.draw_depths(
            progress, inputs.shape[0], random.Random(self.mask_seed('depth')))
        masks = self.generate_masks(
            inputs, progress,
            generator=self._mask_generator(inputs.device), depth=depth)
        latent, mask, ids_restore = self.backbone(
            inputs, mask=masks.mask, ids_restore=masks.ids_restore,
            ids_keep=masks.ids_keep)
        pred = self.neck(latent, ids_restore)
        loss = self.head.loss(pred, inputs, mask)
        nonfinite = (masks.nonfinite.sum() if masks.nonfinite is not None
                     else masks.depth.new_zeros(()))
        return dict(loss=loss, mask_depth=masks.depth.float().mean(),
                    nonfinite_affinity=nonfinite.float())

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
        hierarchy = self.masking.hierarchy(self.teacher_affinity(inputs))
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
