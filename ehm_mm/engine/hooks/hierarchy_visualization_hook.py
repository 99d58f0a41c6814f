# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dataset import default_collate
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS, TRANSFORMS
from mmpretrain.utils import get_ori_model

from ehm_mm.visualization import hierarchy_row, stack_rows

DATA_BATCH = Optional[dict]


@HOOKS.register_module()
class HierarchyVisualizationHook(Hook):
    """Draw the hierarchy and the masks of a few fixed training images.

    Every ``interval`` epochs (or iterations with ``by_epoch=False``), and
    before training starts, the hook runs the model's mask generation
    (``EHMMAE`` or ``EHMSimMIM``: teacher affinity -> hierarchy -> masks at
    the current depth, on the model's mask grid) on the same few training
    images and writes one figure through the runner's visualizer
    (``add_image``), so every configured backend gets it: the local backend
    saves
    ``<work_dir>/<timestamp>/vis_data/vis_image/<name>_<step>.png``,
    TensorBoard shows it under ``<name>``.

    Each row of the figure is one image: the image, the partition at each
    of ``levels`` (one colour per node, white outlines) and the mask at the
    depth of the current progress (grey = masked, outlines of the nodes at
    that depth). The mask noise comes from a generator seeded with ``seed``
    at every drawing, so successive figures differ only by the model and
    the depth: they show the masks evolving.

    Only the main process draws. Images are read once, before training,
    with ``pipeline`` (default: load, resize the short edge and centre-crop
    to the encoder's input size, pack), i.e. without random augmentation.

    Args:
        interval (int): Draw every ``interval`` epochs (iterations when
            ``by_epoch`` is False). Defaults to 1.
        by_epoch (bool): Count ``interval`` in epochs. Use False with
            iteration-based loops. Defaults to True.
        num_images (int): Draw the first ``num_images`` training images
            when ``indices`` is None. Defaults to 4.
        indices (Sequence[int], optional): Dataset indices of the images.
            Defaults to None.
        levels (Sequence[int]): Tree levels to draw (clipped to each tree's
            top level). Defaults to ``(1, 2, 3, 4, 5)``.
        pipeline (Sequence[dict], optional): Transforms that load and pack
            one image. Defaults to None (see above).
        draw_before_train (bool): Also draw before the first iteration.
            Defaults to True.
        min_panel_size (int): Panels are enlarged to at least this many
            pixels in height. Defaults to 128.
        seed (int): Seed of the mask noise. Defaults to 0.
        name (str): Image name given to the visualizer. Defaults to
            ``'ehm_hierarchy'``.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 1,
                 by_epoch: bool = True,
                 num_images: int = 4,
                 indices: Optional[Sequence[int]] = None,
                 levels: Sequence[int] = (1, 2, 3, 4, 5),
                 pipeline: Optional[Sequence[dict]] = None,
                 draw_before_train: bool = True,
                 min_panel_size: int = 128,
                 seed: int = 0,
                 name: str = 'ehm_hierarchy') -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'interval must be an int >= 1, got {interval!r}')
        if indices is None:
            if not isinstance(num_images, int) or num_images < 1:
                raise ValueError(
                    f'num_images must be an int >= 1, got {num_images!r}')
            indices = list(range(num_images))
        if len(indices) == 0:
            raise ValueError('indices must not be empty')
        if not levels or any(
                not isinstance(lvl, int) or lvl < 0 for lvl in levels):
            raise ValueError(
                f'levels must be non-empty ints >= 0, got {levels!r}')
        self.interval = interval
        self.by_epoch = by_epoch
        self.indices = [int(i) for i in indices]
        self.levels = list(levels)
        self.pipeline_cfg = None if pipeline is None else list(pipeline)
        self.draw_before_train = draw_before_train
        self.min_panel_size = min_panel_size
        self.seed = seed
        self.name = name
        self._batch: Optional[dict] = None
        self._last_step: Optional[int] = None

    @staticmethod
    def _check_model(model: torch.nn.Module) -> None:
        """Raise a TypeError unless the model makes teacher masks."""
        needed = ('teacher_affinity', 'masking', 'current_progress')
        missing = [name for name in needed if not hasattr(model, name)]
        if missing:
            raise TypeError(
                'HierarchyVisualizationHook draws the masks a model makes '
                'from its own affinity (EHMMAE, EHMSimMIM); '
                f'{type(model).__name__} has no {", ".join(missing)}: remove '
                'the hook from custom_hooks for this model')

    @staticmethod
    def _input_size(model: torch.nn.Module) -> Tuple[int, int]:
        """The encoder's input ``(height, width)`` in pixels."""
        backbone = model.backbone
        size = getattr(backbone, 'img_size', None)  # ViT
        if size is None:  # Swin and other PatchEmbed encoders
            size = getattr(
                getattr(backbone, 'patch_embed', None), 'init_input_size',
                None)
        if size is None:
            raise TypeError(
                'HierarchyVisualizationHook cannot tell the input size of '
                f'{type(backbone).__name__} (no img_size or '
                'patch_embed.init_input_size): give the hook a pipeline '
                'that loads, resizes and packs one image')
        height, width = (size, size) if isinstance(size, int) else size
        return int(height), int(width)

    def _default_pipeline(self, model: torch.nn.Module) -> List[dict]:
        """Load, resize + centre-crop to the encoder's input size, pack."""
        height, width = self._input_size(model)
        return [
            dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=min(height, width), edge='short'),
            dict(type='CenterCrop', crop_size=(width, height)),
            dict(type='PackInputs'),
        ]

    def _load_images(self, runner) -> dict:
        """Read the fixed images once and collate them into a batch."""
        model = get_ori_model(runner.model)
        dataset = runner.train_dataloader.dataset
        if max(self.indices) >= len(dataset) or min(self.indices) < 0:
            raise ValueError(
                f'HierarchyVisualizationHook.indices {self.indices} out of '
                f'range for a training set of {len(dataset)} images')
        cfg = self.pipeline_cfg or self._default_pipeline(model)
        transforms = [TRANSFORMS.build(t) for t in cfg]
        samples = []
        for idx in self.indices:
            results = dataset.get_data_info(idx)
            for transform in transforms:
                results = transform(results)
                if results is None:
                    raise ValueError(
                        f'pipeline {transform} dropped training image {idx}')
            samples.append(results)
        return default_collate(samples)

    @torch.no_grad()
    def draw(self, runner, step: int) -> Optional[np.ndarray]:
        """Draw the figure for the current model and progress.

        Args:
            runner (Runner): The runner.
            step (int): The step recorded with the image.

        Returns:
            numpy.ndarray, optional: The RGB figure (None on non-main
            processes, which draw nothing).
        """
        if not is_main_process():
            return None
        model = get_ori_model(runner.model)
        self._check_model(model)
        if self._batch is None:
            self._batch = self._load_images(runner)
        data = model.data_preprocessor(self._batch, training=False)
        inputs = data['inputs']
        generator = torch.Generator(device=inputs.device)
        generator.manual_seed(self.seed)
        progress = model.current_progress()
        affinity = model.teacher_affinity(inputs)
        masks = model.masking(affinity, progress=progress, generator=generator)
        tree = model.masking.hierarchy(affinity)  # every level, to draw
        h, w = model.masking.grid_size  # EHMSimMIM: the mask grid
        ancestors = tree.ancestors.reshape(
            inputs.shape[0], -1, h, w).cpu().numpy()
        mask = masks.mask.reshape(-1, h, w).cpu().numpy()
        depth = masks.depth.cpu().numpy()
        images = self._display_images(model, inputs)
        rows = [
            hierarchy_row(images[i], ancestors[i], mask[i], int(depth[i]),
                          self.levels, self.min_panel_size)
            for i in range(len(images))
        ]
        figure = stack_rows(rows)
        runner.visualizer.add_image(self.name, figure, step=step)
        self._last_step = step
        return figure

    @staticmethod
    def _display_images(model: torch.nn.Module,
                        inputs: torch.Tensor) -> np.ndarray:
        """Undo the preprocessor's normalisation: uint8 ``[B, H, W, C]``."""
        pre = model.data_preprocessor
        images = inputs.float()
        if getattr(pre, '_enable_normalize', False):
            images = images * pre.std + pre.mean
        images = images.clamp(0, 255).round().byte()
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def before_train(self, runner) -> None:
        """Draw before the first iteration.

        Args:
            runner (Runner): The runner.
        """
        if self.draw_before_train:
            self.draw(runner, runner.epoch if self.by_epoch else runner.iter)

    def after_train_epoch(self, runner) -> None:
        """Draw every ``interval`` epochs.

        Args:
            runner (Runner): The runner.
        """
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self.draw(runner, runner.epoch + 1)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        """Draw every ``interval`` iterations when not ``by_epoch``.

        Args:
            runner (Runner): The runner.
            batch_idx (int): Index of the batch in the epoch.
            data_batch (dict, optional): The batch. Defaults to None.
            outputs (dict, optional): The model outputs. Defaults to None.
        """
        if not self.by_epoch and self.every_n_train_iters(
                runner, self.interval):
            self.draw(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        """Draw the final state unless the last interval already did.

        Args:
            runner (Runner): The runner.
        """
        step = runner.epoch if self.by_epoch else runner.iter
        if self._last_step != step:
            self.draw(runner, step)
