# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Masks from the teacher: the training-step code EHM self-supervisors share.

``EHMMAE`` and ``EHMSimMIM`` differ in their encoder, in how the teacher's
affinity is read from it (``encoder_affinity``) and in what the student
does with the masks; the rest of a step is :class:`TeacherMasksMixin`'s
:meth:`~TeacherMasksMixin.training_masks`, top to bottom:

1. update the EMA teacher (``update_teacher``);
2. read the training progress ``t = iter / max_iters``;
3. draw each image's depth on the host from this iteration's seed
   (``masking.draw_depths``);
4. unless the mask source needs no affinity or every depth is 0, the patch
   affinity: the teacher's (``encoder_affinity``) or, with
   ``affinity_source='pixels'``, the inputs' own pixel cues;
5. the mask source's masks (``masking(affinity, depth=...)``), a
   :class:`~ehm_mm.models.masking.MaskingResult`.
"""
import copy
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from ..masking import (
    Hierarchy,
    MaskingResult,
    MaskSource,
    attention_affinity,
    build_hierarchy,
    pixel_affinity,
)
from .ema_teacher import EMATeacherMixin

AFFINITY_SOURCES = ('teacher', 'pixels')


def check_affinity_source(affinity_source: Any) -> str:
    """Refuse an unknown ``model.affinity_source``.

    Args:
        affinity_source: The ``affinity_source`` argument of the model.

    Returns:
        str: ``affinity_source``.

    Raises:
        ValueError: It is not one of :data:`AFFINITY_SOURCES`.
    """
    if (not isinstance(affinity_source, str)
            or affinity_source not in AFFINITY_SOURCES):
        raise ValueError(f'model.affinity_source must be one of '
                         f'{AFFINITY_SOURCES}, got {affinity_source!r}')
    return affinity_source


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
    :meth:`build_masking` and :meth:`init_affinity_source` in its
    ``__init__``:

    * :meth:`init_affinity_source`: ``affinity_source`` and the teacher it
      needs (none with ``'pixels'``);
    * :meth:`teacher_affinity`: the affinity the masks are cut from, on the
      mask grid: :meth:`encoder_affinity` (the teacher's attention,
      :func:`~ehm_mm.attention_affinity`; override it for other teacher
      signals) or, with ``affinity_source='pixels'``,
      :meth:`pixel_affinity`;
    * :meth:`predict`: ``mode='predict'`` of :meth:`forward`: the model's
      :meth:`predict_features` and, from :meth:`predict_hierarchy`, the
      ancestors of the trees the masks are cut from;
    * :meth:`training_masks`: one training step's masks (the module
      doc's steps 1-5), through :meth:`generate_masks`: affinity (skipped
      when every drawn depth is 0 or the masking needs no affinity) ->
      masks, one :class:`~ehm_mm.models.masking.MaskingResult`;
    * :meth:`masking_log_vars`: ``mask_depth``, ``nonfinite_affinity`` and
      the teacher's log values.

    What the model implements (its contract with the mixin): ``loss``,
    which calls :meth:`training_masks` and runs its student on the masks
    (MAE: the visible patches; SimMIM: the token mask), returning
    ``dict(loss=..., **self.masking_log_vars(masks))``;
    :meth:`predict_features`; and, where its teacher signal or mask grid
    differs from the ViT attention on the patch grid,
    :meth:`encoder_affinity`.
    """

    attn_layers: Optional[List[int]]
    # 'teacher' (the teacher encoder) or 'pixels' (the inputs' cues); set
    # by `init_affinity_source`.
    affinity_source: str = 'teacher'

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
        if not isinstance(self.masking, MaskSource):
            raise TypeError(
                f'model.masking must build a MaskSource (the mask source '
                f'interface), got {type(self.masking).__name__}')

    def init_affinity_source(self, affinity_source: str, teacher: str,
                             ema_momentum: Optional[float],
                             ema_half_life: Optional[float]) -> None:
        """Set ``affinity_source`` and build the teacher it needs.

        With ``'pixels'`` the teacher options are checked but no teacher is
        built or updated (``init_teacher(needed=False)``), and the log says
        so.

        Args:
            affinity_source (str): ``'teacher'`` or ``'pixels'``, checked
                with :func:`check_affinity_source`.
            teacher (str): ``'ema'`` or ``'online'``.
            ema_momentum (float, optional): EMA momentum per iteration.
            ema_half_life (float, optional): The teacher's half-life as a
                fraction of the run.

        Raises:
            ValueError: An unknown ``affinity_source`` or bad teacher
                options (:meth:`init_teacher`).
        """
        self.affinity_source = check_affinity_source(affinity_source)
        self.init_teacher(teacher, ema_momentum, ema_half_life,
                          needed=affinity_source == 'teacher')
        if affinity_source == 'pixels':
            print_log(
                f"{type(self).__name__}: affinity_source='pixels', the masks' "
                f'affinity comes from the pixel cues; no teacher is built '
                f'(teacher={teacher!r} unused)', logger='current')

    @torch.no_grad()
    def teacher_affinity(self, inputs: Tensor) -> Tensor:
        """Patch affinity ``[B, N, N]`` the masks (and trees) come from.

        :meth:`encoder_affinity`, or with ``affinity_source='pixels'``
        :meth:`pixel_affinity` (no network runs). ``N`` is the mask grid's
        (``self.masking.grid_size``) patch count.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: float32 ``[B, N, N]``.
        """
        if self.affinity_source == 'pixels':
            return self.pixel_affinity(inputs)
        return self.encoder_affinity(inputs)

    @torch.no_grad()
    def encoder_affinity(self, inputs: Tensor) -> Tensor:
        """Patch affinity ``[B, N, N]`` from the teacher encoder.

        The teacher's attention: ``attention_affinity`` runs the encoder in
        eval mode and restores its mode, so the online teacher (the
        student) works too. A model whose mask grid or teacher signal
        differs overrides this.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: float32 ``[B, N, N]``.
        """
        return attention_affinity(
            self.teacher_encoder(), inputs, layers=self.attn_layers)

    @torch.no_grad()
    def pixel_affinity(self, inputs: Tensor) -> Tensor:
        """Patch affinity ``[B, N, N]`` from the inputs' own pixel cues.

        The inputs are de-normalised with the data preprocessor's ``mean``
        and ``std`` (when it normalises) back to the 0-255 scale the data
        pipeline's ``EvolvedHierarchicalMaskGenerator`` sees; then per
        patch of the mask grid (``self.masking.grid_size``) its mean colour
        and gradient texture, and the affinity of two patches is minus the
        squared distance of their cues (:func:`~ehm_mm.pixel_affinity`).
        On the inputs' device, static shapes, no host read. The channel
        order (RGB or BGR) does not change the affinity.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: float32 ``[B, N, N]``.

        Raises:
            ValueError: The image is not the mask grid times one square
                patch size.
        """
        grid_h, grid_w = self.masking.grid_size
        height, width = inputs.shape[-2:]
        patch = height // grid_h
        if (patch == 0 or height != grid_h * patch
                or width != grid_w * patch):
            raise ValueError(
                f'affinity_source=\'pixels\': the {height}x{width} input is '
                f'not the {grid_h}x{grid_w} mask grid of square patches')
        pixels = inputs.float()
        preprocessor = self.data_preprocessor
        if getattr(preprocessor, '_enable_normalize', False):
            pixels = pixels * preprocessor.std + preprocessor.mean
        return pixel_affinity(pixels, patch)

    @torch.no_grad()
    def predict_hierarchy(self, inputs: Tensor) -> Tensor:
        """Ancestor ids of the tree the masks are cut from, for predict().

        ``masking.hierarchy``: the tree of :meth:`teacher_affinity` (the
        teacher's, or the pixel tree) for a source that cuts its masks from
        the affinity; the source's own tree otherwise (block pieces, a
        random tree, drawn from this iteration's generator).

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: ``[B, L, gh, gw]`` ancestor ids per level and mask
            patch, ``(gh, gw) = self.masking.grid_size``.
        """
        if self.masking.requires_affinity:
            tree = self.masking.hierarchy(self.teacher_affinity(inputs))
        else:
            tree = self.masking.hierarchy(
                batch_size=inputs.shape[0],
                generator=self._mask_generator(inputs.device))
        return self._grid_ancestors(tree)

    @torch.no_grad()
    def predict_teacher_hierarchy(self, inputs: Tensor) -> Tensor:
        """Ancestor ids of the tree of the model's affinity, for predict().

        The tree builder's default options on :meth:`teacher_affinity`
        (the teacher's attention, or the pixel cues): what EHM would cut
        masks from. :meth:`predict` writes it as
        ``teacher_hierarchy_ancestors`` when the mask source does not use
        the affinity (block or random-tree masks) or does not cut an
        image's masks from its own tree (shuffled attention).

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Tensor: ``[B, L, gh, gw]``.
        """
        return self._grid_ancestors(build_hierarchy(
            self.teacher_affinity(inputs), self.masking.grid_size))

    def _grid_ancestors(self, tree: Hierarchy) -> Tensor:
        """``tree.ancestors`` ``[B, L, N]`` as ``[B, L, gh, gw]``."""
        h, w = self.masking.grid_size
        return tree.ancestors.reshape(tree.batch_size, -1, h, w)

    def predict_features(self, inputs: Tensor) -> Dict[str, Tensor]:
        """The model's evaluation features, for :meth:`predict`.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            Dict[str, Tensor]: Data-sample field name -> values batched on
            dim 0 (at least ``feature``, ``[B, C]``).
        """
        raise NotImplementedError(
            f'{type(self).__name__} must implement predict_features')

    @torch.no_grad()
    def predict(self,
                inputs: Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        """Features and hierarchies for evaluation.

        Writes into each data sample the fields of
        :meth:`predict_features` (``feature``, which ``KNNAccuracy``
        reads, and what the model adds), ``hierarchy_ancestors``
        (``[L, gh, gw]``, :meth:`predict_hierarchy`: the ancestor ids per
        level of the tree the masks are cut from), which ``HierarchyIoU``
        reads, and, for a mask source that does not use the affinity or
        does not cut an image's masks from its own tree,
        ``teacher_hierarchy_ancestors`` (:meth:`predict_teacher_hierarchy`,
        ``HierarchyIoU(ancestors_key='teacher_hierarchy_ancestors')``).

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.
            data_samples (List[DataSample], optional): Annotations; new
                samples are made when None. Defaults to None.
            **kwargs: Unused.

        Returns:
            List[DataSample]: The data samples with the fields added.
        """
        fields = dict(self.predict_features(inputs))
        fields['hierarchy_ancestors'] = self.predict_hierarchy(inputs)
        if (not self.masking.requires_affinity
                or not self.masking.masks_own_image_tree):
            fields['teacher_hierarchy_ancestors'] = \
                self.predict_teacher_hierarchy(inputs)
        if data_samples is None:
            data_samples = [DataSample() for _ in range(inputs.shape[0])]
        for i, sample in enumerate(data_samples):
            for name, values in fields.items():
                sample.set_field(values[i], name)
        return data_samples

    def forward(self,
                inputs: Union[Tensor, List[Tensor]],
                data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor') -> Any:
        """Dispatch to ``extract_feat``, ``loss`` or the model's ``predict``.

        mmpretrain's self-supervisors know ``'tensor'`` and ``'loss'``;
        ``'predict'`` (features and trees for evaluation) is the EHM
        models' own.

        Args:
            inputs (Tensor | List[Tensor]): The images.
            data_samples (List[DataSample], optional): Annotations.
                Defaults to None.
            mode (str): ``'tensor'``, ``'loss'`` or ``'predict'``.
                Defaults to ``'tensor'``.

        Returns:
            Any: The features, the loss dict or the predicted data samples.
        """
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        return super().forward(inputs, data_samples, mode=mode)

    def training_masks(self, inputs: Tensor) -> MaskingResult:
        """One training step's masks (no device-to-host read).

        Steps 1-5 of the module doc: updates the teacher, reads the
        progress, draws each image's depth on the host from this
        iteration's ``'depth'`` seed and makes the masks
        (:meth:`generate_masks`) with this iteration's generator.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.

        Returns:
            MaskingResult: The masks on ``self.masking.grid_size``.
        """
        self.update_teacher()
        progress = self.current_progress()
        depth = self.masking.draw_depths(
            progress, inputs.shape[0], random.Random(self.mask_seed('depth')))
        return self.generate_masks(
            inputs, progress, generator=self._mask_generator(inputs.device),
            depth=depth)

    @torch.no_grad()
    def generate_masks(self,
                       inputs: Tensor,
                       progress: float,
                       generator: Optional[torch.Generator] = None,
                       depth: Optional[Sequence[int]] = None
                       ) -> MaskingResult:
        """Affinity (when needed) -> masks, steps 4 and 5 of the module doc.

        Args:
            inputs (Tensor): Normalised images ``[B, C, H, W]``.
            progress (float): Training progress in ``[0, 1]``.
            generator (torch.Generator, optional): Random source of the
                masks on the inputs' device. Defaults to None, which means
                the global one.
            depth (Sequence[int], optional): Each image's depth, drawn on
                the host (``masking.draw_depths``); the affinity is skipped
                when all are 0. None draws them from ``generator`` on the
                device at ``progress``. Defaults to None.

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth``, ``hierarchy``, ``nonfinite`` and ``node_size`` on
            ``self.masking.grid_size``.
        """
        needed = self.masking.requires_affinity and (depth is None
                                                     or max(depth) > 0)
        affinity = self.teacher_affinity(inputs) if needed else None
        if depth is None:
            return self.masking(affinity, progress=progress,
                                generator=generator,
                                batch_size=inputs.shape[0])
        return self.masking(affinity, depth=depth, generator=generator)

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
