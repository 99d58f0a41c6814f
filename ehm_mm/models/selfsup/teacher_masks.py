# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Masks from the teacher: the training-step code EHM self-supervisors share.

``EHMMAE`` and ``EHMSimMIM`` differ in their encoder, in where the affinity
comes from (``teacher_affinity``) and in what they do with the masks; the
rest of a step (teacher update, progress, per-image depths, affinity ->
hierarchy -> masks, the logged values) is :class:`TeacherMasksMixin`.
"""
import copy
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmpretrain.registry import MODELS
from torch import Tensor

from ..masking import MaskingResult, attention_affinity
from .ema_teacher import EMATeacherMixin


def check_masking_cfg(masking: Any) -> None:
    """Refuse a ``model.masking`` that is not a config dict.

    Args:
        masking: The ``masking`` argument of the model.

    Raises:
        TypeError: ``masking`` is not a dict.
    """
    if not isinstance(masking, dict):
        raise TypeError('model.masking must be a config dict, got '
                        f'{type(masking).__name__}')


class TeacherMasksMixin(EMATeacherMixin):
    """Mask generation from an EMA (or online) teacher, for a training step.

    For a :class:`~mmpretrain.models.BaseSelfSupervisor` subclass (put the
    mixin first in the bases) that sets ``self.attn_layers`` and calls
    :meth:`build_masking` and :meth:`init_teacher` in its ``__init__``:

    * :meth:`teacher_affinity`: the teacher's attention affinity
      (:func:`~ehm_mm.attention_affinity`); override it for other sources;
    * :meth:`teacher_masks`: affinity -> hierarchy -> masks, the teacher
      skipped when every drawn depth is 0 or the masking needs no affinity;
    * :meth:`training_masks`: one training step's masks: teacher update,
      progress, the per-image depths drawn on the host from this
      iteration's seed, then the model's ``generate_masks``;
    * :meth:`masking_log_vars`: ``mask_depth``, ``nonfinite_affinity`` and
      the teacher's log values.
    """

    attn_layers: Optional[List[int]]

    def build_masking(self, masking: dict, grid: Tuple[int, int],
                      grid_name: str) -> None:
        """Build ``self.masking`` on ``grid``, filling in its ``grid_size``.

        Args:
            masking (dict): Config of the mask generator.
            grid (Tuple[int, int]): The grid the masks live on.
            grid_name (str): What the grid is, for the error message.

        Raises:
            ValueError: ``masking.grid_size`` is given and is not ``grid``,
                or the mask generator refuses its config.
            TypeError: The mask generator refuses its config.
        """
        masking = copy.deepcopy(dict(masking))
        given = masking.setdefault('grid_size', grid)
        if tuple(given) != tuple(grid):
            raise ValueError(f'model.masking.grid_size {given} is not the '
                             f'{grid_name} {grid}; leave it out')
        try:
            self.masking = MODELS.build(masking)
        except (TypeError, ValueError) as e:
            raise type(e)(f'model.masking: {e}') from e

    @torch.no_grad()
    def teacher_affinity(self, inputs: Tensor) -> Tensor:
        """Patch affinity ``[B, N, N]`` from the teacher's attention.

        ``attention_affinity`` runs the encoder in eval mode and restores
        its mode, so the online teacher (the student) works too.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: float32 ``[B, N, N]``.
        """
        return attention_affinity(
            self.teacher_encoder(), inputs, layers=self.attn_layers)

    @torch.no_grad()
    def teacher_masks(self,
                      inputs: Tensor,
                      progress: float,
                      generator: Optional[torch.Generator] = None,
                      depth: Optional[Sequence[int]] = None
                      ) -> MaskingResult:
        """Teacher affinity -> hierarchy -> masks at depth ``d(progress)``.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.
            progress (float): Training progress in ``[0, 1]``.
            generator (torch.Generator, optional): Random source of the
                masks on the inputs' device. Defaults to None, which means
                the global one.
            depth (Sequence[int], optional): Each image's depth, drawn on
                the host (``masking.draw_depths``); the teacher is skipped
                when all are 0. None draws them from ``generator`` on the
                device. Defaults to None.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth``, ``hierarchy`` and ``nonfinite``.
        """
        if not getattr(self.masking, 'requires_affinity', True):
            # Content-free masks (BlockwiseMasking, RandomHierarchyMasking):
            # no teacher.
            if depth is None:
                return self.masking(
                    None, progress=progress, generator=generator,
                    batch_size=inputs.shape[0])
            return self.masking(None, depth=depth, generator=generator)
        if depth is None:
            return self.masking(
                self.teacher_affinity(inputs), progress=progress,
                generator=generator)
        affinity = self.teacher_affinity(inputs) if max(depth) > 0 else None
        return self.masking(affinity, depth=depth, generator=generator)

    def training_masks(self, inputs: Tensor) -> Any:
        """One training step's masks (no device-to-host read).

        Updates the teacher, reads the progress, draws each image's depth
        on the host from this iteration's ``'depth'`` seed and calls the
        model's ``generate_masks`` with this iteration's generator.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            What the model's ``generate_masks`` returns.
        """
        self.update_teacher()
        progress = self.current_progress()
        depth = self.masking.draw_depths(
            progress, inputs.shape[0], random.Random(self.mask_seed('depth')))
        return self.generate_masks(
            inputs, progress, generator=self._mask_generator(inputs.device),
            depth=depth)

    def masking_log_vars(self, result: MaskingResult) -> Dict[str, Tensor]:
        """The values a training step logs beside its loss.

        Args:
            result (MaskingResult): The step's masks.

        Returns:
            Dict[str, Tensor]: ``mask_depth`` (the batch's mean masking
            depth), ``nonfinite_affinity`` (images whose affinity held NaN
            or inf and got random masks; 0 normally), for masks cut from
            trees ``mask_node_size`` (the mean size in mask patches of the
            masked nodes) and :meth:`teacher_log_vars`.
        """
        nonfinite = (result.nonfinite.sum() if result.nonfinite is not None
                     else result.depth.new_zeros(()))
        log_vars = dict(mask_depth=result.depth.float().mean(),
                        nonfinite_affinity=nonfinite.float())
        if result.node_size is not None:  # mean masked-node size, patches
            log_vars['mask_node_size'] = result.node_size.mean()
        log_vars.update(self.teacher_log_vars())
        return log_vars
